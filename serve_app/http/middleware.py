"""Per-request context: request id, one access-log line, one metrics event.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched and
the log line is written when the stream really ends.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Callable, Optional

from core.logs import request_id_var
from serve_app.ops.metrics import RequestEvent
from serve_app.pipeline import Outcome

access_log = logging.getLogger("aicore.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _incoming_id(scope) -> Optional[str]:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SAFE_ID.match(text) else None
    return None


def _serve_request_id() -> Optional[str]:
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or None
    except Exception:
        return None


class RequestContextMiddleware:
    def __init__(self, app, record: Callable[[RequestEvent], None]):
        self.app = app
        self.record = record

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        serve_id = _serve_request_id()  # Ray Serve's proxy already returns it as X-Request-ID
        request_id = serve_id or _incoming_id(scope) or uuid.uuid4().hex
        request_id_var.set(request_id)  # each request runs in its own task context
        started = time.monotonic()
        status = {"code": 500}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            elif message["type"] == "websocket.close" and status["code"] == 500:
                status["code"] = 403  # closed before the handshake was accepted
            if message["type"] == "http.response.start" and not serve_id:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, status["code"], time.monotonic() - started)

    def _finish(self, scope, status: int, latency: float) -> None:
        client = scope.get("client")
        record_request(
            self.record, Outcome.of(scope), method=scope.get("method", "WS"),
            route=getattr(scope.get("route"), "path", None) or "unmatched", status=status, latency=latency,
            peer=client[0] if client else None,
            # A WebSocket's requests count one by one (serve_app/integrations/ws_session.py), not its upgrade.
            count_key=scope["type"] == "http",
        )


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
