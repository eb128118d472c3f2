"""Build `/api/v1` answers from a finished generation (shared by single and batch requests)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional, Union

from serve_app.generation import Generation
from serve_app.http.email_format import to_email
from serve_app.http.protocol.api_v1 import ChatRequest, GenerateRequest, GenerateResponse


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def generate_response(generation: Generation, text: str, body: Union[GenerateRequest, ChatRequest],
                      session_id: Optional[str] = None) -> GenerateResponse:
    email = to_email(text, body.email) if body.format == "email" else None
    return GenerateResponse(**summary(generation, text, session_id), email=email)
