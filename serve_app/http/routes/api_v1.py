"""HTTP routes of `/api/v1`: a few lines each; the logic lives in serving.py."""

from __future__ import annotations

import time
from typing import Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from core.errors import SessionNotFound, StoreUnavailable
from core.logs import request_id_var
from serve_app.access.auth import Principal
from serve_app.http.dependencies import (
    require_admin,
    require_caller,
    require_key,
    require_metrics,
    require_model_viewer,
)
from serve_app.http.routes.audit import audited
from serve_app.http.routes.common import cache_headers, request_options, streamed
from serve_app.http.routes.statuses import CHAT, EMBEDDING, GENERATION, KEYED, LOAD, SESSION, links, responses_for
from serve_app.http.streaming import sse_stream
from serve_app.ops.conversations import forget_conversation
from serve_app.ops.model_metrics import render_model_metrics
from serve_app.ops.readiness import readiness
from serve_app.ops.status import ModelView
from serve_app.pipeline import Admission
from serve_app.protocol.api_v1 import (
    GENERATE_SSE_EXAMPLE,
    METRICS_EXAMPLE,
    ChatRequest,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelInfo,
    ModelLoadRequest,
    ModelsResponse,
    ModelStateResponse,
    ModelUnloadRequest,
    ReadinessResponse,
    SessionDeleted,
    SessionDetail,
    SessionList,
)
from serve_app.replies import chat_logprobs, generate_response, iso_time, now_iso, summary, tool_fields

router = APIRouter(prefix="/api/v1")


async def _run(request: Request, body: Union[GenerateRequest, ChatRequest], admission: Admission,
               endpoint: str, prompt: Optional[str] = None, messages: Optional[list[dict]] = None):
    session_id = getattr(body, "session_id", None)
    tools = body.tool_use() if isinstance(body, ChatRequest) else None
    generation = await request.app.state.generation.start(
        admission, body.model, request_id_var.get(), body.to_sampling_params(),
        prompt=prompt, messages=messages, priority=body.priority, tools=tools,
        options=request_options(request, admission.principal, endpoint, body.cache, session_id),
    )
    headers = cache_headers(generation)
    answer = generation.tool_answer()  # with tools: text answer streamed, calls at the end
    if body.stream:
        name = generation.model_id

        def piece(text: str, logprobs=()) -> list[dict]:
            event = {"response": text, "model": name, "done": False}
            if logprobs:  # the event's tokens, in OpenAI's chat shape (with tools: the calls' tokens too)
                event["logprobs"] = chat_logprobs(logprobs).model_dump(exclude_none=True)
            return [event] if text or logprobs else []

        def on_chunk(c) -> list[dict]:
            return piece(answer.text(answer.feed(c.text)) if answer is not None else c.text, c.logprobs)

        def on_end(g) -> list[dict]:
            done = {**summary(g, "", session_id), "done": True, "finish_reason": g.finish_reason}
            if answer is None:
                return [done]
            last = piece(answer.text(answer.finish()))
            fields = tool_fields(answer, g.finish_reason)
            calls = fields["tool_calls"]
            done.update(finish_reason=fields["finish_reason"],
                        **({"tool_calls": [c.model_dump() for c in calls]} if calls else {}))
            return last + [done]

        return sse_stream(request, generation, on_chunk=on_chunk, on_end=on_end, headers=headers)
    result = await generation.collect()
    whole = generation.tool_answer(result.text)
    reply = generate_response(generation, result.text, body, session_id, whole, result.logprobs)
    return JSONResponse(reply.model_dump(exclude_none=True), headers=headers)


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True,
             responses=responses_for(KEYED, GENERATION, streamed(GenerateResponse, GENERATE_SSE_EXAMPLE)))
async def generate(body: GenerateRequest, request: Request, admission: Admission = Depends(require_caller)):
    return await _run(request, body, admission, "generate", prompt=body.prompt)


@router.post("/chat", response_model=GenerateResponse, response_model_exclude_none=True,
             responses=responses_for(KEYED, CHAT, streamed(GenerateResponse, GENERATE_SSE_EXAMPLE)))
async def chat(body: ChatRequest, request: Request, admission: Admission = Depends(require_caller)):
    return await _run(request, body, admission, "chat", messages=[m.as_dict() for m in body.messages])


@router.get("/sessions", response_model=SessionList, responses=responses_for(KEYED, links(
    200, GetSession=("get", "/api/v1/sessions/{session_id}", "/sessions/0/session_id"),
    DeleteSession=("delete", "/api/v1/sessions/{session_id}", "/sessions/0/session_id"))))
async def list_sessions(request: Request, principal: Principal = Depends(require_key)):
    return SessionList(sessions=await request.app.state.sessions.list(principal.key_id))


@router.get("/sessions/{session_id}", response_model=SessionDetail, responses=responses_for(KEYED, SESSION))
async def get_session(session_id: str, request: Request, principal: Principal = Depends(require_key)):
    record = await request.app.state.sessions.load(principal.key_id, session_id)
    if record is None:  # another key's session looks exactly like a missing one
        raise SessionNotFound(f"session {session_id!r} does not exist", param="session_id")
    return SessionDetail(**record)


@router.delete("/sessions/{session_id}", response_model=SessionDeleted, responses=responses_for(KEYED, SESSION))
async def delete_session(session_id: str, request: Request, principal: Principal = Depends(require_key)):
    record = await request.app.state.sessions.delete(principal.key_id, session_id)
    if record is None:
        raise SessionNotFound(f"session {session_id!r} does not exist", param="session_id")
    state = request.app.state
    await forget_conversation(state.router, state.model_status, record["model"], f"{principal.key_id}/{session_id}")
    return SessionDeleted(session_id=session_id, deleted=True)


@router.post("/embeddings", response_model=EmbedResponse, responses=responses_for(KEYED, EMBEDDING))
async def embeddings(body: EmbedRequest, request: Request, admission: Admission = Depends(require_caller)):
    started = time.monotonic()
    entry, result = await request.app.state.embeddings.embed(admission, body.model, request_id_var.get(), body.texts())
    return EmbedResponse(
        embeddings=result.vectors, model=entry.name, dimensions=len(result.vectors[0]),
        tokens_used=result.prompt_tokens, processing_time=round(time.monotonic() - started, 4), timestamp=now_iso(),
    )


@router.get("/models", response_model=ModelsResponse, responses=responses_for(KEYED))
async def models(request: Request, principal: Principal = Depends(require_model_viewer)):
    views = await _views(request)
    admin = "admin" in principal.scopes  # a failed model's reason (Ray's text: paths, tracebacks): admins only
    listing = []
    for name, entry in request.app.state.router.entries.items():
        if not principal.may_use(name):
            continue
        view = views[name]
        live, life = view.live, view.lifecycle
        listing.append(
            ModelInfo(
                name=name, type=entry.config.type, task=entry.config.task, format=entry.config.format,
                state=view.state, replicas=view.replicas, description=entry.config.description,
                in_flight=live.get("in_flight"), queued=live.get("queued"), cancelled=live.get("cancelled"),
                served=live.get("served"),
                load_time_s=live.get("load_time_s"), resident_memory_bytes=life.get("resident_memory_bytes"),
                node_id=live.get("node_id"), pid=live.get("pid"), adapters=list(entry.config.adapters),
                loaded_adapters=live.get("adapters"),
                last_used=iso_time(life.get("last_used")), disabled=life.get("disabled", False),
                footprint_bytes=life.get("footprint_bytes"), state_reason=life.get("reason") if admin else None,
            )
        )
    router = request.app.state.router
    return ModelsResponse(
        models=listing, default_model=router.default_model, default_embedding_model=router.default_embedding_model
    )


async def _views(request: Request) -> dict[str, ModelView]:
    return await request.app.state.control.views()


async def _model_state(request: Request, name: str) -> ModelStateResponse:
    view = (await _views(request))[name]
    return ModelStateResponse(model=name, state=view.state, replicas=view.replicas,
                              disabled=view.lifecycle.get("disabled", False))


@router.post("/models/load", response_model=ModelStateResponse,
             responses=responses_for(KEYED, LOAD, {202: {"model": ModelStateResponse}}))
async def load_model(body: ModelLoadRequest, request: Request, principal: Principal = Depends(require_admin)):
    """Load a model now (admin). Idempotent: a loaded model answers 200 at once."""
    async with audited(request, principal, "model.load", body.model) as action:
        entry = request.app.state.router.resolve(body.model, may_use=principal.may_use)
        action.target, before = entry.name, await _model_state(request, entry.name)
        state, replicas = await request.app.state.control.load(entry.name, wait=body.wait)
        if not body.wait and state != "ready":
            reply = ModelStateResponse(model=entry.name, state=state, replicas=replicas)
            action.status = 202
        else:
            reply = await _model_state(request, entry.name)
        action.seen(before.model_dump(exclude={"model"}), reply.model_dump(exclude={"model"}))
    return JSONResponse(reply.model_dump(), status_code=202) if action.status == 202 else reply


@router.post("/models/unload", response_model=ModelStateResponse,
             responses=responses_for(KEYED, LOAD, {202: {"model": ModelStateResponse}}))
async def unload_model(body: ModelUnloadRequest, request: Request, principal: Principal = Depends(require_admin)):
    """Unload a model (admin): drain its requests (or cancel them with `force`), free its memory.
    Idempotent. The next request loads it again unless `disable` was given. `wait: false`
    answers 202 at once and unloads in the background."""
    async with audited(request, principal, "model.disable" if body.disable else "model.unload", body.model) as action:
        entry, control = request.app.state.router.resolve(body.model, may_use=principal.may_use), request.app.state.control
        action.target, before = entry.name, await _model_state(request, entry.name)
        if not body.wait:
            control.start_unload(entry.name, force=body.force, disable=body.disable)
            reply = ModelStateResponse(model=entry.name, state="unloading",
                                       replicas=(await control.replicas(entry.name))[1], disabled=body.disable)
            action.status = 202
        else:
            await control.unload(entry.name, force=body.force, disable=body.disable)
            reply = await _model_state(request, entry.name)
        action.seen(before.model_dump(exclude={"model"}), reply.model_dump(exclude={"model"}))
    return JSONResponse(reply.model_dump(), status_code=202) if action.status == 202 else reply


@router.get("/health", response_model=HealthResponse)
async def health(request: Request):
    """Liveness: the ingress answers; each model's state is listed. Always 200."""
    states = await request.app.state.model_status.states()
    return HealthResponse(status="ok", models={name: state for name, (state, _) in states.items()})


@router.get("/health/ready", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}})
async def ready(request: Request):
    """Readiness for a load balancer: 200 when the server can serve, 503 (with Retry-After) when not."""
    is_ready, fields = await readiness(request.app)
    body = ReadinessResponse(**fields)
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503,
                        headers=None if is_ready else {"Retry-After": "5"})


@router.get("/metrics", response_class=PlainTextResponse,
            responses=responses_for(KEYED, {200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}}))
async def metrics(request: Request, _: Principal = Depends(require_metrics)):
    """Prometheus text: counters from every ingress replica, model gauges read now. Needs the
    `metrics` scope (a scraper's key) or `admin`: the text names every key id and its usage."""
    body = await request.app.state.metrics.render()
    body += render_model_metrics(await _views(request), request.app.state.router.default_model)
    try:  # a shared figure: read from the store at scrape time
        sessions = await request.app.state.store.count("session:")
        body += (b"# HELP aicore_sessions_active Chat sessions stored.\n# TYPE aicore_sessions_active gauge\n"
                 + f"aicore_sessions_active {sessions}\n".encode())
    except StoreUnavailable:
        pass
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

