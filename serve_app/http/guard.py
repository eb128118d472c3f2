"""Request guard (pure ASGI, inside the request-context middleware so its errors carry the id).

Before the app: resolve the client address (X-Forwarded-For only from TRUSTED_PROXIES, whatever
Ray's proxy did with it: serve_app/http/proxy_headers.py),
apply the global IP allowlist to every HTTP request and WebSocket connection (403), refuse
bodies over MAX_BODY_BYTES (413) before any parsing, chunked bodies included, and bodies that do not
arrive whole within BODY_TIMEOUT_S (408, connection closed: a slow upload cannot hold a request
open; headers are Ray's proxy's business, docs/security.md#slow-and-large-clients); each of these
refusals of a request for an admin route goes to the audit log (serve_app/http/refusals.py). On the way out:
`X-Content-Type-Options: nosniff` and the key's x-ratelimit-* headers on every response, and,
before the last body byte leaves, the request's admissions are settled with the response's status
(serve_app/pipeline.py: tokens settled, usage recorded, so the next request sees them); a
response that never ends is settled when the app returns, as a client that left, or with the
error that ended it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from core.errors import AddressNotAllowed, BodyTimeout, BodyTooLarge
from core.netguard import allowed, parse_networks
from serve_app.http.errors import error_response
from serve_app.http.proxy_headers import ENV, NOTHING_TRUSTED, ProxyTrust, original_client
from serve_app.http.refusals import admin_route_of, record_refused
from serve_app.pipeline import Outcome

logger = logging.getLogger("aicore.guard")


def _header(scope, name: bytes) -> Optional[str]:
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == name]
    return ",".join(values) if values else None


class GuardMiddleware:
    def __init__(self, app, settings: Any):
        self.app = app
        self.allowlist = parse_networks(settings.ip_allowlist)
        self.trusted = parse_networks(settings.trusted_proxies)
        self.proxy = ProxyTrust.from_environment()  # what Ray's proxy (uvicorn) believes: undone below
        if self.proxy.rewrites:
            logger.warning(
                "Ray's HTTP proxy takes client addresses from X-Forwarded-For (%s is not %r where Ray was "
                "started); AI Core undoes that, but a local client sending X-Forwarded-For without a trusted "
                "proxy counts as unknown: start with scripts/serve.sh", ENV, NOTHING_TRUSTED,
            )
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        outcome = Outcome.of(scope)
        peer, server = scope.get("client"), scope.get("server")
        address = original_client(peer[0] if peer else None, _header(scope, b"x-forwarded-for"), self.trusted,
                                  self.proxy, server[0] if server else None)
        outcome.client_ip = str(address) if address else None
        if scope["type"] == "websocket":
            if not allowed(address, self.allowlist):  # refused before the handshake: HTTP 403
                return await send({"type": "websocket.close", "code": 1008, "reason": "address not allowed"})
            return await self.app(scope, receive, send)
        status = {"code": 500, "ended": False}

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                present = {k.lower() for k, _ in headers}
                for name, value in outcome.ratelimit_headers.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                status["ended"] = True
                await outcome.settle(status=status["code"])
            await send(message)

        if not allowed(address, self.allowlist):
            return await self._refuse(AddressNotAllowed("this address may not use the API"), scope, receive,
                                      guarded_send)
        try:
            receive = await self._bounded_body(scope, receive)
        except (BodyTooLarge, BodyTimeout) as error:
            return await self._refuse(error, scope, receive, guarded_send)
        try:
            await self.app(scope, receive, guarded_send)
        except BaseException as error:  # the app failed or was cancelled before its response ended
            if not status["ended"]:
                await asyncio.shield(outcome.settle(error))
            raise
        if not status["ended"]:  # the app returned and its response never ended: the client left
            await asyncio.shield(outcome.settle(asyncio.CancelledError()))

    @staticmethod
    async def _refuse(error, scope, receive, send):
        """Answer the refusal; one asking for an admin route is a refused admin attempt (audit log)."""
        if admin_route_of(scope):
            await record_refused(scope, error)
        return await error_response(error)(scope, receive, send)

    async def _bounded_body(self, scope, receive):
        """Read the whole body up front (it is small by construction) and replay it to the app.
        It must arrive within `body_timeout` seconds of the first read, else BodyTimeout."""
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            raise BodyTooLarge(f"request body of {int(length)} bytes exceeds the limit of {self.max_body}")
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") and length is None:
            return receive
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        chunks = None
                        first = message
                        break
                    size += len(message.get("body", b""))
                    if size > self.max_body:
                        raise BodyTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
                    chunks.append(message.get("body", b""))
                    more = message.get("more_body", False)
        except TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within {self.body_timeout:g} s "
                              f"({size} bytes received)") from None
        if chunks is None:  # disconnected while sending: hand that on
            replay = [first]
        else:
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop(0) if replay else await receive()

        return replayed
