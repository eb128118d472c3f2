"""What runs in Ray's proxy before the app (serve_app/http/proxy_ws.py): uvicorn's WebSocket
message limit, and the middleware that refuses an address the app refused, until its time is up."""

from __future__ import annotations

import asyncio
import inspect
import json

from serve_app.websocket.session import WsLimits


def test_rays_proxy_builds_uvicorn_config_without_ws_max_size():
    """The hook's premise (serve_app/http/proxy_ws.py): a Ray upgrade that changes it fails here."""
    from ray.serve._private import http_util

    source = inspect.getsource(http_util.start_asgi_http_server)
    assert "uvicorn.Config(" in source and "ws_max_size" not in source
    assert "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" in inspect.getsource(http_util.configure_http_middlewares)


def test_the_proxy_callback_sets_uvicorns_limit(monkeypatch):
    import uvicorn

    from serve_app.http import proxy_ws

    monkeypatch.setattr(uvicorn, "Config", uvicorn.config.Config)
    monkeypatch.setenv("WS_MAX_FRAME_BYTES", "65536")
    [middleware] = proxy_ws.proxy_callback()
    assert middleware.cls is proxy_ws.RefusedAddresses
    assert uvicorn.Config(lambda: None).ws_max_size == 65536
    assert uvicorn.Config(lambda: None, ws_max_size=10).ws_max_size == 10
    monkeypatch.setenv("WS_MAX_FRAME_BYTES", "2048")
    proxy_ws.proxy_callback()  # again: replaced, not stacked
    assert uvicorn.Config(lambda: None).ws_max_size == 2048 and uvicorn.Config.__mro__[1] is uvicorn.config.Config
    for value, expected in (("junk", 1_048_576), ("10", 1_048_576), (None, 1_048_576), (" 4096 ", 4096)):
        environ = {} if value is None else {"WS_MAX_FRAME_BYTES": value}
        assert proxy_ws.max_frame_bytes(environ) == expected


def test_the_settings_default_matches_the_proxys():
    from core.settings import Settings
    from serve_app.http import proxy_ws

    assert Settings.model_fields["ws_max_frame_bytes"].default == proxy_ws.DEFAULT_MAX_FRAME_BYTES
    assert WsLimits.from_settings(Settings()) == WsLimits()


def test_the_proxy_refuses_a_client_the_app_refused_until_its_time_is_up(monkeypatch):
    from serve_app.http import proxy_ws

    calls = []

    async def app(scope, receive, send):  # the app: refuses the first socket for 30 s
        calls.append(scope["client"][0])
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1008, "reason": "too many failed authentications from this "
                                                                        "address: retry in 30 s" if len(calls) == 1
                    else "authentication failed"})

    middleware = proxy_ws.RefusedAddresses(app, max_entries=2)
    clock = [1000.0]
    monkeypatch.setattr(proxy_ws.time, "monotonic", lambda: clock[0])

    def connect(peer, forwarded=None):
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "websocket", "client": (peer, 5555),
                 "headers": [(b"x-forwarded-for", forwarded.encode())] if forwarded else []}
        asyncio.run(middleware(scope, None, send))
        return sent

    connect("192.0.2.1")
    refused = connect("192.0.2.1")  # answered by the proxy: the app is not called
    assert len(calls) == 1 and refused[-1] == {"type": "websocket.close", "code": 1008, "reason":
                                               "too many failed authentications from this address: retry in 30 s"}
    assert json.loads(refused[1]["text"])["error"]["code"] == "too_many_auth_failures"
    connect("192.0.2.1", forwarded="198.51.100.4")  # another client behind that peer: the app decides
    connect("192.0.2.2")
    assert calls == ["192.0.2.1", "192.0.2.1", "192.0.2.2"]
    clock[0] += 29.5
    assert connect("192.0.2.1")[-1]["reason"].endswith("retry in 1 s")
    clock[0] += 1
    connect("192.0.2.1")  # its time is up
    assert calls[-1] == "192.0.2.1" and len(calls) == 4
    for i in range(5):  # bounded: the oldest go first
        middleware._remember((f"203.0.113.{i}", b""), clock[0] + 60)
    assert list(middleware.until) == [("203.0.113.3", b""), ("203.0.113.4", b"")]
    assert len(middleware.until) <= 2


def test_the_proxy_middleware_passes_http_through():
    from serve_app.http import proxy_ws

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(proxy_ws.RefusedAddresses(app)({"type": "http"}, None, None))
    assert seen == ["http"]
