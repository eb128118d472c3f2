"""HTTP routes of `/api/v1`: a few lines each; the logic lives in serving.py."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from serve_app.auth import Principal, require_key
from serve_app.logs import request_id_var
from serve_app.protocol.api_v1 import (
    ChatRequest,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    ReadinessResponse,
)
from serve_app.model_metrics import render_model_metrics
from serve_app.serving import Generation
from serve_app.status import ModelView, model_views
from serve_app.streaming import note_usage, sse_stream

router = APIRouter(prefix="/api/v1")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(generation: Generation, text: str) -> dict:
    return {
        "response": text,
        "model": generation.entry.name,
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
    request.state.model = generation.entry.name
    if body.stream:
        name = generation.entry.name
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


@router.get("/models", response_model=ModelsResponse)
async def models(request: Request, _: Principal = Depends(require_key)):
    views = await _views(request)
    listing = [
        ModelInfo(
            name=name, type=entry.config.type, format=entry.config.format, state=views[name].state,
            replicas=views[name].replicas, description=entry.config.description,
            in_flight=views[name].live.get("in_flight"), cancelled=views[name].live.get("cancelled"),
            load_time_s=views[name].live.get("load_time_s"),
            resident_memory_bytes=views[name].live.get("rss_bytes"), node_id=views[name].live.get("node_id"),
        )
        for name, entry in request.app.state.router.entries.items()
    ]
    return ModelsResponse(models=listing, default_model=request.app.state.router.default_model)


async def _views(request: Request) -> dict[str, ModelView]:
    handles = {name: entry.handle for name, entry in request.app.state.router.entries.items()}
    return await model_views(request.app.state.model_status, handles)


@router.get("/health", response_model=HealthResponse)
async def health(request: Request):
    """Liveness: the ingress answers; each model's state is listed. Always 200."""
    states = await request.app.state.model_status.states()
    return HealthResponse(status="ok", models={name: state for name, (state, _) in states.items()})


@router.get("/health/ready", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}})
async def ready(request: Request):
    """Readiness for a load balancer: 200 when the default model can serve, 503 (with Retry-After) when not."""
    states = await request.app.state.model_status.states()
    default = request.app.state.router.default_model
    is_ready = states.get(default, ("unknown", 0))[0] == "ready"
    body = ReadinessResponse(
        status="ready" if is_ready else "not_ready",
        default_model=default,
        models={name: state for name, (state, _) in states.items()},
    )
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503,
                        headers=None if is_ready else {"Retry-After": "5"})


@router.get("/metrics")
async def metrics(request: Request, _: Principal = Depends(require_key)):
    """Prometheus text: counters from every ingress replica, model gauges read now."""
    counted = await request.app.state.metrics.render()
    gauges = render_model_metrics(await _views(request), request.app.state.router.default_model)
    return Response(counted + gauges, media_type="text/plain; version=0.0.4; charset=utf-8")
