"""One access-log line and one metrics event per request, for every channel (an HTTP request, or one
request message of a WebSocket)."""

from __future__ import annotations

import logging
from typing import Callable, Optional

from serve_app.ops.metrics import RequestEvent
from serve_app.pipeline import Outcome

access_log = logging.getLogger("aicore.access")


def record_request(record: Optional[Callable[[RequestEvent], None]], outcome: Outcome, *, method: str, route: str,
                   status: int, latency: float, peer: Optional[str] = None, count_key: bool = True,
                   **fields) -> None:
    """One access-log line and one metrics event for one request: an HTTP request (above), or one
    request message of a WebSocket (its own status, latency, model, tokens and key; `fields` are
    added to the log line)."""
    model = outcome.model or "-"
    error_type, error_code = outcome.error_type, outcome.error_code
    if status >= 400 and not error_type:  # answered outside our handlers (e.g. an unhandled 500)
        error_type = "server_error" if status >= 500 else "invalid_request_error"
    event = RequestEvent(
        route=route,
        model=model,
        status=status,
        latency_s=latency,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        first_token_s=outcome.first_token_s,
        cache=outcome.cache,
        key_id=(outcome.key_id if count_key else None) or "-",
        tokens_per_s=outcome.tokens_per_s,
        error_type=error_type,
        error_code=error_code,
    )
    prompt_fields = {"log_prompt": outcome.log_prompt, "log_response": outcome.log_response} \
        if outcome.log_prompt is not None else {}  # only with LOG_PROMPTS
    access_log.info(
        "request",
        extra={
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(latency * 1000, 2),
            "model": model,
            "key_id": outcome.key_id,
            "client_ip": outcome.client_ip or peer,  # resolved by the guard
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "cache": event.cache,
            **fields,
            **prompt_fields,
        },
    )
    if record is None:
        return
    try:
        record(event)
    except RuntimeError:  # no running loop (shutdown): drop the event
        pass
