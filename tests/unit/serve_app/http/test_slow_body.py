"""The guard bounds how long a request body may take to arrive (BODY_TIMEOUT_S, serve_app/http/guard.py).

Driven as ASGI with a client that sends its body in pieces at a chosen pace; the real app behind
Ray's proxy is checked in tests/integration/security/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from serve_app.http.guard import GuardMiddleware

TIMEOUT_S = 0.3


def _settings(**overrides):
    return SimpleNamespace(**{"ip_allowlist": [], "trusted_proxies": [], "max_body_bytes": 1000,
                              "body_timeout_s": TIMEOUT_S, **overrides})


class App:
    """Echoes the body it was handed (after the guard), or records that it was never called."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.messages: list[dict] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.messages.append(message)
        body = message.get("body", b"")
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


def _scope(method="POST", headers=()):
    return {"type": "http", "method": method, "path": "/api/v1/generate", "headers": list(headers),
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


def _trickle(pieces: list[bytes], pause_s: float, then: str = "end"):
    """A client that sends `pieces` one by one, `pause_s` apart (the first one too), then ends
    the body (`end`), leaves (`disconnect`) or stays without sending more (`stall`)."""
    queue = list(pieces)

    async def receive():
        if not queue:
            if then == "disconnect":
                return {"type": "http.disconnect"}
            await asyncio.sleep(TIMEOUT_S * 10)  # long past the timeout (without one: the app sees a disconnect)
            return {"type": "http.disconnect"}
        await asyncio.sleep(pause_s)
        piece = queue.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(queue) or then != "end"}

    return receive


def _run(scope, receive, app=None, **settings):
    app = app or App()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(GuardMiddleware(app, _settings(**settings))(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, app


def test_a_body_arriving_in_time_reaches_the_app_whole():
    status, _, body, app = _run(_scope(headers=[(b"content-length", b"9")]),
                                _trickle([b"abc", b"def", b"ghi"], TIMEOUT_S / 10))
    assert status == 200 and body == b"abcdefghi"
    assert app.messages == [{"type": "http.request", "body": b"abcdefghi", "more_body": False}]


def test_a_body_trickling_past_the_timeout_is_408_and_the_app_never_runs():
    # Each piece comes well within the timeout of the one before: the bound is on the whole body.
    pieces = [b"x"] * 20
    status, headers, body, app = _run(_scope(headers=[(b"content-length", b"20")]), _trickle(pieces, TIMEOUT_S / 5))
    assert status == 408
    assert headers[b"connection"] == b"close"  # the rest of the body is never read as a next request
    error = json.loads(body)["error"]
    assert error["code"] == "body_timeout" and error["type"] == "invalid_request_error"
    assert "did not arrive within" in error["message"]
    assert app.messages == []


def test_a_client_that_stops_sending_is_408():
    status, _, body, app = _run(_scope(headers=[(b"content-length", b"100")]), _trickle([b"{"], 0, then="stall"))
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout"
    assert app.messages == []


def test_a_chunked_body_without_length_is_bounded_too():
    status, _, body, _ = _run(_scope(headers=[(b"transfer-encoding", b"chunked")]), _trickle([b"a"] * 20, TIMEOUT_S / 5))
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout"


def test_the_size_limit_still_wins_over_a_slow_body():
    status, _, body, _ = _run(_scope(headers=[(b"transfer-encoding", b"chunked")]),
                              _trickle([b"a" * 600, b"a" * 600], TIMEOUT_S / 10))
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"


def test_a_client_leaving_mid_body_is_handed_on_to_the_app():
    status, _, _, app = _run(_scope(headers=[(b"content-length", b"9")]),
                             _trickle([b"abc"], TIMEOUT_S / 10, then="disconnect"))
    assert app.messages == [{"type": "http.disconnect"}]


def test_a_request_without_a_body_is_not_timed():
    """GET (no Content-Length): the app's own reads are its business (a stream's disconnect watch)."""
    async def receive():
        await asyncio.sleep(TIMEOUT_S * 2)
        return {"type": "http.disconnect"}

    status, _, _, app = _run(_scope(method="GET"), receive)
    assert status == 200 and app.messages == [{"type": "http.disconnect"}]
