"""Build `/api/v1` answers from a finished generation (shared by single and batch requests)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional, Union

from serve_app.email_format import to_email
from serve_app.generation import Generation
from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest, GenerateResponse
from serve_app.protocol.common import CalledFunction, ChoiceLogprobs, TokenLogprob, ToolCall, TopLogprob
from serve_app.tool_calls import OutputCall, ToolAnswer


def now_iso() -> str:
    return iso_time(time.time())


def iso_time(epoch: Optional[float]) -> Optional[str]:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(generation: Generation, text: str, session_id: Optional[str] = None) -> dict:
    fields = {
        "response": text,
        "model": generation.model_id,
        "tokens_used": generation.usage.total_tokens,
        "processing_time": round(time.monotonic() - generation.started, 4),
        "timestamp": now_iso(),
        "cached": generation.cache == "hit",
    }
    return {**fields, "session_id": session_id} if session_id else fields


def token_text(piece: bytes) -> str:
    """A token's text; one that ends inside a UTF-8 character shows U+FFFD (its `bytes` are exact)."""
    return piece.decode("utf-8", errors="replace")


def chat_logprobs(entries) -> Optional[ChoiceLogprobs]:
    """OpenAI's chat shape of the engine's (bytes, logprob, alternatives) per token (every channel's);
    None without entries."""
    if not entries:
        return None
    return ChoiceLogprobs(content=[TokenLogprob(
        token=token_text(piece), logprob=logprob, bytes=list(piece),
        top_logprobs=[TopLogprob(token=token_text(p), logprob=lp, bytes=list(p)) for p, lp in top],
    ) for piece, logprob, top in entries])


def wire_calls(calls: list[OutputCall]) -> Optional[list[ToolCall]]:
    """Calls in OpenAI's `tool_calls` shape (every channel's); None without calls."""
    return [ToolCall(id=c.id, function=CalledFunction(name=c.name, arguments=c.arguments)) for c in calls] or None


def tool_fields(answer: ToolAnswer, finish_reason: Optional[str]) -> dict:
    """An `/api/v1` answer's `response` (the text answer), `tool_calls` and `finish_reason`, read
    from an answer with tools (streamed or whole)."""
    content, calls, finish = answer.result(finish_reason or "length")
    return {"response": content or "", "tool_calls": wire_calls(calls), "finish_reason": finish}


def generate_response(generation: Generation, text: str, body: Union[GenerateRequest, ChatRequest],
                      session_id: Optional[str] = None, answer: Optional[ToolAnswer] = None,
                      logprobs: tuple = ()) -> GenerateResponse:
    """`answer`: the answer read with tools (then `text` is not used: its text answer is);
    `logprobs`: the engine's entries of every generated token (asked with `logprobs: true`)."""
    fields = summary(generation, text, session_id)
    if answer is not None:
        fields.update(tool_fields(answer, generation.finish_reason))
    email = to_email(fields["response"], body.email) if body.format == "email" else None
    return GenerateResponse(**fields, email=email, logprobs=chat_logprobs(logprobs))
