"""HTTP routes of `/api/v1`: a few lines each; the logic lives in serving.py."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from serve_app.auth import Principal, require_key
from serve_app.logs import request_id_var
from serve_app.protocol.api_v1 import (
    ChatRequest,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
)
from serve_app.serving import Generation
from serve_app.streaming import note_usage, sse_stream

router = APIRouter(prefix="/api/v1")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(generation: Generation, text: str) -> dict:
    return {
        "response": text,
        "model": generation.model_id,
        "tokens_used": generation.usage.total_tokens,
        "processing_time": round(time.monotonic() - generation.started, 4),
        "timestamp": _now_iso(),
    }


async def _run(request: Request, body: Union[GenerateRequest, ChatRequest], principal: Principal,
               prompt: Optional[str] = None, messages: Optional[list[dict]] = None):
    generation = await request.app.state.generation.start(
        body.model, request_id_var.get(), body.to_sampling_params(),
        prompt=prompt, messages=messages, key_id=principal.key_id,
    )
    request.state.model = generation.model_id
    if body.stream:
        name = generation.model_id
        return sse_stream(
            request,
            generation,
            on_chunk=lambda c: [{"response": c.text, "model": name, "done": False}] if c.text else [],
            on_end=lambda g: [{**_summary(g, ""), "done": True, "finish_reason": g.finish_reason}],
        )
    result = await generation.collect()
    note_usage(request, generation)
    return GenerateResponse(**_summary(generation, result.text))


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, request: Request, principal: Principal = Depends(require_key)):
    return await _run(request, body, principal, prompt=body.prompt)


@router.post("/chat", response_model=GenerateResponse)
async def chat(body: ChatRequest, request: Request, principal: Principal = Depends(require_key)):
    return await _run(request, body, principal, messages=[m.as_dict() for m in body.messages])


@router.post("/embeddings", response_model=EmbedResponse)
async def embeddings(body: EmbedRequest, request: Request, _: Principal = Depends(require_key)):
    started = time.monotonic()
    entry, result = await request.app.state.embeddings.embed(body.model, request_id_var.get(), body.texts())
    request.state.model = entry.name
    request.state.prompt_tokens = result.prompt_tokens
    return EmbedResponse(
        embeddings=result.vectors, model=entry.name, dimensions=len(result.vectors[0]),
        tokens_used=result.prompt_tokens, processing_time=round(time.monotonic() - started, 4), timestamp=_now_iso(),
    )


@router.get("/models", response_model=ModelsResponse)
async def models(request: Request, _: Principal = Depends(require_key)):
    status = request.app.state.model_status
    states = await status.states()
    listing = []
    for name, entry in request.app.state.router.entries.items():
        state, replicas = states.get(name, ("unknown", 0))
        # Ask a replica for live figures only when one runs: a call would wake a scaled-to-zero model.
        live = await status.replica_info(entry.handle) if state == "ready" else {}
        listing.append(
            ModelInfo(
                name=name, type=entry.config.type, task=entry.config.task, format=entry.config.format,
                state=state, replicas=replicas, description=entry.config.description, in_flight=live.get("in_flight"),
                cancelled=live.get("cancelled"), load_time_s=live.get("load_time_s"),
                resident_memory_bytes=live.get("rss_bytes"), adapters=list(entry.config.adapters),
                loaded_adapters=live.get("adapters"),
            )
        )
    router = request.app.state.router
    return ModelsResponse(
        models=listing, default_model=router.default_model, default_embedding_model=router.default_embedding_model
    )


@router.get("/health", response_model=HealthResponse)
async def health(request: Request):
    states = await request.app.state.model_status.states()
    return HealthResponse(status="ok", models={name: state for name, (state, _) in states.items()})


@router.get("/metrics")
async def metrics(request: Request, _: Principal = Depends(require_key)):
    body = await request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

