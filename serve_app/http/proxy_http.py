"""HEADER_TIMEOUT_S and MAX_HEADER_BYTES in Ray's HTTP proxy: the only layer that reads a request head.

The app (every ASGI middleware included) sees a request only once its whole head (request line
and headers) has arrived, so it cannot bound either. Ray Serve 2.60's proxy runs uvicorn
(`ray.serve._private.http_util.start_asgi_http_server`) with httptools when it is installed, and
neither bounds them: uvicorn arms no timer on a new connection (its keep-alive timer runs only
between two requests, and any byte cancels it), and httptools keeps every header byte it is given
(so one huge header grows the proxy by its whole size; h11 stops at 16 KiB but has no timer either). Ray's
`http_options` expose only `keep_alive_timeout_s`. Measured: docs/security.md#slow-and-large-clients.

`bound_http(timeout_s, max_bytes)` makes every later `uvicorn.Config` wrap the protocol class it
loads (httptools or h11) so that, while a connection waits for a request head (from the accept,
and from the first byte of each later request on a kept-alive connection):
- a head not complete within `timeout_s` answers 408 (`header_timeout`) and the connection is
  closed (a connection that sent nothing is closed silently, as nginx does);
- a head growing past `max_bytes` answers 431 (`headers_too_large`) and is closed; the bytes are
  counted as they arrive, so nothing larger is ever buffered.
Once the head is complete nothing changes: bodies are the app's (BODY_TIMEOUT_S, MAX_BODY_BYTES),
WebSocket upgrades leave this protocol. Applied by `proxy_callback` (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH),
which also applies serve_app/http/proxy_ws.py's WebSocket limit.

Runs in Ray's process, before its HTTP server starts: it imports nothing of the app and never
raises (a failure would stop the proxy); a value it cannot read leaves the default in place.
"""

from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger("aicore.proxy_http")

IMPORT_PATH = "serve_app.http.proxy_http:proxy_callback"
DEFAULT_HEADER_TIMEOUT_S = 10.0  # core/settings.py: header_timeout_s
DEFAULT_MAX_HEADER_BYTES = 32768  # core/settings.py: max_header_bytes


def _env(environ, name: str, parse, minimum, default):
    for key in (name.upper(), name.lower()):
        value = environ.get(key)
        if value is not None:
            try:
                parsed = parse(value.strip())
            except ValueError:
                return default
            return parsed if parsed >= minimum else default
    return default


def header_timeout_s(environ=os.environ) -> float:
    return _env(environ, "header_timeout_s", float, 0.001, DEFAULT_HEADER_TIMEOUT_S)


def max_header_bytes(environ=os.environ) -> int:
    return _env(environ, "max_header_bytes", int, 1024, DEFAULT_MAX_HEADER_BYTES)


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def bounded_protocol(base: type, timeout_s: float, max_bytes: int) -> type:
    """`base` (uvicorn's HttpToolsProtocol or H11Protocol) with the request head bounded."""
    if getattr(base, "_aicore_head_bounds", None) == (timeout_s, max_bytes):
        return base
    base = getattr(base, "_aicore_unbounded", base)

    class HeadBounded(base):
        _aicore_head_bounds = (timeout_s, max_bytes)
        _aicore_unbounded = base

        def connection_made(self, transport) -> None:
            self._head_timer = None
            self._head_bytes = 0
            super().connection_made(transport)
            self._arm()

        def _waiting_for_head(self) -> bool:
            """No request in progress: what arrives now is (the start of) a request head."""
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            waiting, cycle = self._waiting_for_head(), self.cycle
            if waiting:
                self._head_bytes += len(data)
                self._arm()
            super().data_received(data)
            if self.transport.get_protocol() is not self:  # upgraded (WebSocket): no longer ours
                self._disarm()
            elif not waiting or self.transport.is_closing():
                return
            elif self.cycle is not cycle:  # the head is complete: a request started
                self._disarm()
                self._head_bytes = 0
            elif self._head_bytes > max_bytes:
                self._refuse(_answer(431, "Request Header Fields Too Large", "headers_too_large",
                                     f"the request line and headers exceed {max_bytes} bytes"))

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            if not self._waiting_for_head():
                return
            answer = _answer(408, "Request Timeout", "header_timeout",
                             f"the request headers did not arrive within {timeout_s:g} s")
            self._refuse(answer if self._head_bytes else b"")

        def _refuse(self, answer: bytes) -> None:
            self._disarm()
            if answer:
                self.transport.write(answer)
            self.transport.close()

    HeadBounded.__name__ = HeadBounded.__qualname__ = base.__name__
    return HeadBounded


def bound_http(timeout_s: float, max_bytes: int) -> bool:
    """Make `uvicorn.Config` (as Ray's http_util calls it) load a head-bounded HTTP protocol.
    True when it is in place."""
    import uvicorn

    current = uvicorn.Config
    if getattr(current, "_aicore_head_bounds", None) == (timeout_s, max_bytes):
        return True

    class HeadBoundedConfig(current):
        _aicore_head_bounds = (timeout_s, max_bytes)

        def load(self) -> None:
            super().load()
            self.http_protocol_class = bounded_protocol(self.http_protocol_class, timeout_s, max_bytes)

    HeadBoundedConfig.__name__ = HeadBoundedConfig.__qualname__ = current.__name__
    uvicorn.Config = HeadBoundedConfig
    return True


def proxy_callback() -> list:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH: the request head bounded as above, and
    serve_app/http/proxy_ws.py's WebSocket message limit and middleware. In HAProxy mode (its peer
    secret set) the same hook also runs in each ingress replica's own server, where HAProxy's
    stamp of the client's address must become the ASGI client first: deployments/haproxy_peer.py's
    middleware goes last in the list, which Ray applies outermost."""
    from deployments import haproxy_peer
    from serve_app.http import proxy_ws

    middlewares = proxy_ws.proxy_callback()
    if os.environ.get(haproxy_peer.SECRET_ENV):
        middlewares = middlewares + haproxy_peer.middlewares()
    timeout, limit = header_timeout_s(), max_header_bytes()
    try:
        bound_http(timeout, limit)
        logger.info("request heads must arrive within %g s and %d bytes (this HTTP server)", timeout, limit)
    except Exception:  # never stop Ray's proxy
        logger.warning("could not bound request heads in uvicorn; nginx's limits remain", exc_info=True)
    return middlewares
