"""WS_MAX_FRAME_BYTES in Ray's HTTP proxy: the first layer that reads a WebSocket message.

Ray Serve 2.60 runs uvicorn in its proxy actor (and, in HAProxy mode, in each ingress replica)
through `ray.serve._private.http_util.start_asgi_http_server`, which builds `uvicorn.Config`
with no `ws_max_size`: uvicorn's default, 16 MiB, applies, and uvicorn buffers a whole message
before anything sees it. Neither `http_options` nor an environment variable of Ray or uvicorn
sets it (uvicorn reads `UVICORN_*` variables only on its command line). The one hook Ray runs in
that process before the server is built is RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (meant to
return proxy middlewares): `scripts.run_server` points it at `proxy_callback` below, which makes
every later `uvicorn.Config` default to WS_MAX_FRAME_BYTES. A larger message is then refused by
uvicorn (websockets' parser) as soon as its frame header announces it: closed 1009, its payload
never buffered, nothing forwarded to a replica. The app checks the same limit again for runs that
skip `scripts.run_server` (a plain `serve run`: 16 MiB at the proxy).

The callback also returns one proxy middleware, `RefusedAddresses`: once the app has refused a
socket because its address failed authentication too often (close reason "too many failed
authentications from this address: retry in N s", serve_app/websocket/session.py), the
proxy refuses that client's next sockets itself for those N seconds, the same way, without
routing them to a replica: under a flood from refused addresses the ingress replicas do not see
it. The client is the TCP peer and its X-Forwarded-For header together, so a refusal never spills
onto another client behind the same trusted proxy; a client that varies the header only reaches
the app again, which refuses it there. A cache of the app's own decisions, bounded, per proxy.

Runs in Ray's process, before its HTTP server starts: it imports nothing of the app and never
raises (a failure would stop the proxy); a value it cannot read leaves the default in place.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time

logger = logging.getLogger("aicore.proxy_ws")

IMPORT_PATH = "serve_app.http.proxy_ws:proxy_callback"
DEFAULT_MAX_FRAME_BYTES = 1_048_576  # core/settings.py: ws_max_frame_bytes


def max_frame_bytes(environ=os.environ) -> int:
    """WS_MAX_FRAME_BYTES from the environment (as the app's settings read it), else the default."""
    for name in ("WS_MAX_FRAME_BYTES", "ws_max_frame_bytes"):
        value = environ.get(name)
        if value is not None:
            try:
                parsed = int(value.strip())
            except ValueError:
                break
            if parsed >= 1024:
                return parsed
            break
    return DEFAULT_MAX_FRAME_BYTES


def bound_uvicorn(limit: int) -> bool:
    """Make `uvicorn.Config` (as Ray's http_util calls it: `uvicorn.Config(...)`) default
    `ws_max_size` to `limit`; an explicit value still wins. True when it is in place."""
    import uvicorn

    current = uvicorn.Config
    if getattr(current, "_aicore_ws_max_size", None) == limit:
        return True
    base = getattr(current, "_aicore_base", current)

    class BoundedConfig(base):
        _aicore_ws_max_size = limit
        _aicore_base = base

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("ws_max_size", limit)
            super().__init__(*args, **kwargs)

    BoundedConfig.__name__ = BoundedConfig.__qualname__ = base.__name__
    uvicorn.Config = BoundedConfig
    return True


REFUSED = re.compile(r"too many failed authentications from this address: retry in (\d+) s")
MAX_REFUSED = 10000  # clients remembered at once


class RefusedAddresses:
    """ASGI middleware (Ray's proxy): WebSocket clients the app refused for their failed
    authentications are refused here until their time is up (see the module's docstring)."""

    def __init__(self, app, max_entries: int = MAX_REFUSED):
        self.app = app
        self.max_entries = max_entries
        self.until: dict[tuple, float] = {}  # (peer, X-Forwarded-For): time.monotonic() it is refused until

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        forwarded = [v for k, v in scope.get("headers", []) if k == b"x-forwarded-for"]
        who = (client[0] if client else None, b",".join(forwarded))
        until = self.until.get(who)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                return await self._refuse(send, math.ceil(left))
            self.until.pop(who, None)

        async def watching(message):
            if message["type"] == "websocket.close":
                match = REFUSED.fullmatch(message.get("reason") or "")
                if match:
                    self._remember(who, time.monotonic() + int(match.group(1)))
            await send(message)

        await self.app(scope, receive, watching)

    def _remember(self, who: tuple, until: float) -> None:
        if len(self.until) >= self.max_entries:
            now = time.monotonic()
            self.until = {k: v for k, v in self.until.items() if v > now}
            while len(self.until) >= self.max_entries:  # still full: the oldest go first
                self.until.pop(next(iter(self.until)))
        self.until[who] = until

    @staticmethod
    async def _refuse(send, retry_s: int) -> None:
        """As the app refuses it: accepted (a browser then sees the reason), an error, closed 1008."""
        message = f"too many failed authentications from this address: retry in {retry_s} s"
        error = {"message": message, "type": "requests", "param": None, "code": "too_many_auth_failures",
                 "request_id": None}
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"type": "error", "id": None, "error": error})})
        await send({"type": "websocket.close", "code": 1008, "reason": message})


def proxy_callback() -> list:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH: uvicorn's WebSocket message limit set to
    WS_MAX_FRAME_BYTES in this process, and the `RefusedAddresses` middleware."""
    limit = max_frame_bytes()
    try:
        bound_uvicorn(limit)
        logger.info("WebSocket messages over %d bytes are refused by this HTTP server (uvicorn ws_max_size)", limit)
    except Exception:  # never stop Ray's proxy: the app's own check remains
        logger.warning("could not set uvicorn's ws_max_size; the app's WS_MAX_FRAME_BYTES check remains",
                       exc_info=True)
    try:
        from starlette.middleware import Middleware

        return [Middleware(RefusedAddresses)]
    except Exception:  # the app refuses those sockets itself
        logger.warning("could not add the refused-addresses middleware", exc_info=True)
        return []
