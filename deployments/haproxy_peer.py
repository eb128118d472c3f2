"""The client's address in HAProxy mode (INGRESS_MODE=haproxy).

In Ray Serve's HAProxy mode HAProxy, not Ray's Python proxy, takes the HTTP connection and
forwards it to an ingress replica's own HTTP server ("direct ingress"). That server's peer is
HAProxy, so every client would look like 127.0.0.1 to the IP allowlists, the limits and the
logs. HAProxy adds no `X-Forwarded-For` in Ray 2.60's template, and believing one would let any
local process pick its address.

So the start path (scripts/haproxy_mode.py) has HAProxy stamp every request with one header
carrying the TCP peer it saw and a secret made for this run (`PEER_HEADER`, replacing whatever
the client sent), and Ray applies `middlewares()` (named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH)
around the replica's direct-ingress app: a stamp with the right secret becomes the ASGI
`client`; the header never reaches the app; without the secret (a process on the node talking
to a replica port directly) the TCP peer stays the client. TRUSTED_PROXIES then works as with
Ray's proxy.
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Optional

PEER_HEADER = "x-aicore-peer"
SECRET_ENV = "AICORE_HAPROXY_PEER_SECRET"


def stamp(secret: str) -> str:
    """The HAProxy directive that sets the header (a log-format string: peer address, port, secret)."""
    return f'http-request set-header {PEER_HEADER} "%[src] %[src_port] {secret}"'


def peer_from(value: bytes, secret: str) -> Optional[tuple[str, int]]:
    """(host, port) from a stamp made with `secret`; None for anything else."""
    parts = value.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    if not hmac.compare_digest(parts[2].encode(), secret.encode()):
        return None
    return parts[0], int(parts[1])


class HAProxyPeer:
    """ASGI middleware: the stamped peer becomes `scope["client"]`; the header is always removed."""

    def __init__(self, app: Any, secret: str):
        self.app = app
        self.secret = secret

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = self.resolve(scope)
        await self.app(scope, receive, send)

    def resolve(self, scope: dict) -> dict:
        headers = scope.get("headers") or []
        stamps = [value for name, value in headers if name == PEER_HEADER.encode()]
        if not stamps:
            return scope
        scope = {**scope, "headers": [(name, value) for name, value in headers if name != PEER_HEADER.encode()]}
        peer = peer_from(stamps[0], self.secret) if len(stamps) == 1 and self.secret else None
        if peer is not None:
            scope["client"] = peer
        return scope


def middlewares() -> list:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH target: called in each replica that serves direct ingress."""
    from starlette.middleware import Middleware

    return [Middleware(HAProxyPeer, secret=os.environ.get(SECRET_ENV, ""))]
