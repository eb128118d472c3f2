"""HTTP routes of the OpenAI-compatible `/v1` API."""

from __future__ import annotations

import array
import base64
import sys
import time
import uuid
from typing import Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from core.errors import InvalidRequest
from core.logs import request_id_var
from serve_app.access.auth import Principal
from serve_app.choices import Choices
from serve_app.http.dependencies import require_caller, require_key
from serve_app.http.routes.common import cache_headers, request_options, streamed
from serve_app.http.routes.statuses import CHAT, EMBEDDING, GENERATION, KEYED, MODEL_CARD, links, responses_for
from serve_app.http.streaming import sse_stream
from serve_app.pipeline import Admission
from serve_app.protocol.openai import (
    CHAT_SSE_EXAMPLE,
    COMPLETION_SSE_EXAMPLE,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    FunctionDelta,
    ModelCard,
    ModelList,
    ToolCallDelta,
    UsageInfo,
)
from serve_app.replies import chat_logprobs, token_text, wire_calls
from serve_app.tool_calls import ArgumentsPiece, CallStart, TextPiece, ToolAnswer

router = APIRouter(prefix="/v1")


def _usage(choices: Choices) -> UsageInfo:
    u = choices.usage
    return UsageInfo(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)


def _dump(model) -> dict:
    return model.model_dump(exclude_none=False)


def _completion_logprobs(entries, offset: int = 0) -> Optional[CompletionLogprobs]:
    """OpenAI's legacy completions shape; `text_offset` counts characters from `offset`."""
    if not entries:
        return None
    tokens = [token_text(piece) for piece, _, _ in entries]
    offsets = [offset + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return CompletionLogprobs(tokens=tokens, token_logprobs=[lp for _, lp, _ in entries],
                              top_logprobs=[{token_text(p): lp for p, lp in top} for _, _, top in entries],
                              text_offset=offsets)


def _tool_deltas(answer: ToolAnswer, events) -> list[Delta]:
    """OpenAI's deltas of what an answer's text completed: text pieces as content, a call's first
    delta once its name is complete (id, type, name, empty arguments), then its argument fragments."""
    deltas = []
    for event in events:
        if isinstance(event, TextPiece):
            deltas.append(Delta(content=event.text))
        elif isinstance(event, CallStart):
            deltas.append(Delta(tool_calls=[ToolCallDelta(index=event.index, id=answer.ids[event.index],
                                                          type="function",
                                                          function=FunctionDelta(name=event.name, arguments=""))]))
        elif isinstance(event, ArgumentsPiece):
            deltas.append(Delta(tool_calls=[ToolCallDelta(index=event.index,
                                                          function=FunctionDelta(arguments=event.text))]))
    return deltas


@router.post("/chat/completions", responses=responses_for(KEYED, CHAT, streamed(ChatCompletion, CHAT_SSE_EXAMPLE)))
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           admission: Admission = Depends(require_caller)):
    tool_use = body.tool_use()
    choices = await request.app.state.generation.start_choices(
        admission, body.model, request_id_var.get(), body.to_sampling_params(), body.n,
        messages=[m.as_dict() for m in body.messages], priority=body.priority, tools=tool_use,
        options=request_options(request, admission.principal, "chat.completions", body.cache, body.session_id),
    )
    name = choices.model_id
    headers = cache_headers(choices)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: Delta, finish=None, choices=True, logprobs=None, index=0) -> dict:
        choice = [ChatChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)] if choices else []
        return _dump(ChatCompletionChunk(id=cid, created=created, model=name, choices=choice))

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # with tools, each choice's answer is read as it streams: text as content, calls as deltas
        answers = {i: g.tool_answer() for i, g in enumerate(choices.generations)} if tool_use is not None else {}
        open_choices = set(range(len(choices)))

        def ending(index: int, finish: Optional[str]) -> list[dict]:
            events = []
            if tool_use is not None:
                answer = answers[index]
                events = [chunk(d, index=index) for d in _tool_deltas(answer, answer.finish())]
                finish = answer.result(finish or "length")[2]
            return events + [chunk(Delta(), finish or "length", index=index)]

        def on_chunk(item) -> list[dict]:
            index, c = item
            events = []
            if tool_use is not None:
                events += [chunk(d, index=index) for d in _tool_deltas(answers[index], answers[index].feed(c.text))]
            elif c.text or c.logprobs:
                events.append(chunk(Delta(content=c.text), logprobs=chat_logprobs(c.logprobs), index=index))
            if c.finish_reason and len(choices) > 1:  # one choice ends while others go on
                open_choices.discard(index)
                events += ending(index, c.finish_reason)
            return events

        def on_end(_) -> list[dict]:
            events = []
            for index in sorted(open_choices):
                events += ending(index, choices.generations[index].finish_reason)
            if include_usage:
                events.append({**chunk(Delta(), choices=False), "usage": _dump(_usage(choices))})
            return events

        first = [chunk(Delta(role="assistant", content=""), index=i) for i in range(len(choices))]
        return sse_stream(request, choices, on_chunk=on_chunk, on_end=on_end, first=first, headers=headers)
    out = []
    for index, result in enumerate(await choices.collect()):
        content, calls, finish = result.text, [], result.finish_reason
        if tool_use is not None:
            content, calls, finish = choices.generations[index].tool_answer().read(result.text, finish)
        out.append(ChatChoice(index=index, message=ChatMessageOut(content=content, tool_calls=wire_calls(calls)),
                              finish_reason=finish, logprobs=chat_logprobs(result.logprobs)))
    return JSONResponse(_dump(ChatCompletion(id=cid, created=created, model=name, choices=out,
                                             usage=_usage(choices))), headers=headers)


@router.post("/completions", responses=responses_for(KEYED, GENERATION, streamed(Completion, COMPLETION_SSE_EXAMPLE)))
async def completions(body: CompletionRequest, request: Request, admission: Admission = Depends(require_caller)):
    choices = await request.app.state.generation.start_choices(
        admission, body.model, request_id_var.get(), body.to_sampling_params(), body.n, prompt=body.prompt,
        priority=body.priority, options=request_options(request, admission.principal, "completions", body.cache),
    )
    name = choices.model_id
    headers = cache_headers(choices)
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def completion(parts: list[CompletionChoice], usage=None) -> dict:
        return _dump(Completion(id=cid, created=created, model=name, choices=parts, usage=usage))

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sent = [0] * len(choices)  # characters streamed per choice: where its next text_offset starts
        open_choices = set(range(len(choices)))

        def on_chunk(item) -> list[dict]:
            index, c = item
            finish = c.finish_reason if len(choices) > 1 else None  # one choice ends while others go on
            if finish:
                open_choices.discard(index)
            if not (c.text or c.logprobs or finish):
                return []
            logprobs, sent[index] = _completion_logprobs(c.logprobs, sent[index]), sent[index] + len(c.text)
            return [completion([CompletionChoice(index=index, text=c.text, finish_reason=finish, logprobs=logprobs)])]

        def on_end(_) -> list[dict]:
            usage = _usage(choices) if include_usage else None
            ends = [CompletionChoice(index=i, text="", finish_reason=choices.generations[i].finish_reason or "length")
                    for i in sorted(open_choices)]
            if len(choices) > 1 and usage is not None:  # OpenAI sends the usage in a chunk of its own
                return [completion(ends)] * bool(ends) + [completion([], usage)]
            return [completion(ends, usage)] if ends else []

        return sse_stream(request, choices, on_chunk=on_chunk, on_end=on_end, headers=headers)
    parts = [CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason,
                              logprobs=_completion_logprobs(r.logprobs))
             for i, r in enumerate(await choices.collect())]
    return JSONResponse(completion(parts, _usage(choices)), headers=headers)


def _encode(vector: list[float], encoding_format: str) -> Union[list[float], str]:
    if encoding_format == "base64":  # what the openai package asks for by default
        packed = array.array("f", vector)
        if sys.byteorder == "big":
            packed.byteswap()  # the wire format is little-endian float32
        return base64.b64encode(packed.tobytes()).decode("ascii")
    return vector


@router.post("/embeddings", response_model=EmbeddingList, responses=responses_for(KEYED, EMBEDDING))
async def embeddings(body: EmbeddingRequest, request: Request, admission: Admission = Depends(require_caller)):
    entry, result = await request.app.state.embeddings.embed(admission, body.model, request_id_var.get(), body.texts())
    size = len(result.vectors[0])
    if body.dimensions is not None and body.dimensions != size:
        raise InvalidRequest(f"model {entry.name!r} gives {size} dimensions, not {body.dimensions}",
                             param="dimensions")
    return EmbeddingList(
        data=[Embedding(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(result.vectors)],
        model=entry.name,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


@router.get("/models", response_model=ModelList, responses=responses_for(KEYED, links(
    200, GetModel=("get", "/v1/models/{model_id}", "/data/0/id"))))
async def list_models(request: Request, principal: Principal = Depends(require_key)):
    created = request.app.state.started_at
    ids = [i for i in request.app.state.router.model_ids() if principal.may_use(i.partition(":")[0])]
    views = await request.app.state.control.views()
    cards = []
    for model_id in ids:
        view = views.get(model_id.partition(":")[0])
        cards.append(ModelCard(id=model_id, created=created, state=view.state if view else None,
                               replicas=view.replicas if view else None))
    return ModelList(data=cards)


@router.get("/models/{model_id}", response_model=ModelCard, responses=responses_for(KEYED, MODEL_CARD))
async def get_model(model_id: str, request: Request, principal: Principal = Depends(require_key)):
    request.app.state.router.resolve_adapter(model_id, None, principal.may_use)  # not the key's: as if missing
    return ModelCard(id=model_id, created=request.app.state.started_at)
