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
from serve_app.request_log import record_request

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
            # A WebSocket's requests count one by one (serve_app/websocket/session.py), not its upgrade.
            count_key=scope["type"] == "http",
        )
