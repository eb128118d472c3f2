"""Request heads bounded in uvicorn (serve_app/http/proxy_http.py): a real uvicorn server in this
process, with each HTTP implementation Ray's proxy may run (httptools when installed, else h11).

Ray's own proxy with the callback is checked in tests/integration/security/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import pytest
import uvicorn

from core.settings import Settings
from serve_app.http import proxy_http

TIMEOUT_S = 0.4
MAX_BYTES = 4096
IMPLEMENTATIONS = ["httptools", "h11"]


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    answer = f"{scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def serving(implementation: str):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=implementation, lifespan="off", log_level="critical", timeout_keep_alive=5)
    config.load()
    config.http_protocol_class = proxy_http.bounded_protocol(config.http_protocol_class, TIMEOUT_S, MAX_BYTES)
    config.load = lambda: None  # already loaded, with the bounded protocol
    config.loaded = True
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _read_all(reader, guard_s: float = 10) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=guard_s)  # a hang guard


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _error(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


def run(implementation, client):
    async def main():
        async with serving(implementation) as port:
            return await client(port)
    return asyncio.run(main())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_head_that_never_ends_answers_408_and_is_closed(implementation):
    async def client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        answer = asyncio.create_task(_read_all(reader))
        for _ in range(int(TIMEOUT_S * 10)):  # each byte well within the timeout of the last: the bound is on the whole head
            await asyncio.sleep(TIMEOUT_S / 4)
            if answer.done():  # answered and closed: a byte more would reset the connection (its answer unread)
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
        return await answer

    answer = run(implementation, client)
    assert _status(answer) == 408
    assert _error(answer)["code"] == "header_timeout"
    assert b"connection: close" in answer


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_connection_that_sends_nothing_is_closed_silently(implementation):
    async def client(port):
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        return await _read_all(reader)

    assert run(implementation, client) == b""


def test_a_head_over_the_limit_answers_431_as_it_arrives():
    """httptools keeps every header byte it is given: the bound stops it (h11 stops at 16 KiB itself)."""
    async def client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (MAX_BYTES * 2))
        return await _read_all(reader)

    answer = run("httptools", client)
    assert _status(answer) == 431 and _error(answer)["code"] == "headers_too_large"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_normal_requests_keep_alive_and_bodies_are_not_bounded_here(implementation):
    async def client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        # a head and a body larger than MAX_BYTES in one write: only the head counts
        body = b"b" * (MAX_BYTES * 4)
        writer.write(b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answers.append(await reader.readuntil(b"/one %d" % len(body)))
        await asyncio.sleep(TIMEOUT_S * 2)  # idle between requests: uvicorn's keep-alive (5 s) decides
        # a slow body: the app's business (BODY_TIMEOUT_S), not this bound
        writer.write(b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        for byte in (b"x", b"y", b"z"):
            await asyncio.sleep(TIMEOUT_S)
            writer.write(byte)
        answers.append(await reader.readuntil(b"/two 3"))
        writer.close()
        return answers

    one, two = run(implementation, client)
    assert _status(one) == 200 and _status(two) == 200


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_the_next_head_on_a_kept_alive_connection_is_bounded_too(implementation):
    async def client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"/one 0")
        writer.write(b"GET /two HTTP/1.1\r\nHost: a\r\n")  # never ends
        return await _read_all(reader)

    answer = run(implementation, client)
    assert _status(answer) == 408 and _error(answer)["code"] == "header_timeout"


def test_a_websocket_outlives_the_head_timeout():
    from websockets.asyncio.client import connect

    async def client(port):
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await asyncio.sleep(TIMEOUT_S * 3)
            await ws.send("still here")
            return await asyncio.wait_for(ws.recv(), timeout=10)

    assert run("httptools", client) == "still here"


def test_bound_http_wraps_what_uvicorn_config_loads(monkeypatch):
    monkeypatch.setattr(uvicorn, "Config", uvicorn.config.Config)  # restored afterwards
    assert proxy_http.bound_http(3.0, 2048)
    assert proxy_http.bound_http(3.0, 2048)  # once is enough
    config = uvicorn.Config(app, http="h11", lifespan="off")  # as Ray's http_util calls it
    config.load()
    assert config.http_protocol_class._aicore_head_bounds == (3.0, 2048)
    assert config.http_protocol_class.__mro__[1].__name__ == "H11Protocol"


def test_the_proxy_callback_applies_the_head_bounds_and_the_websocket_limit(monkeypatch):
    """One callback for Ray's proxy (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH takes one): ours
    and serve_app/http/proxy_ws.py's, whose middlewares it hands on."""
    from serve_app.http import proxy_ws

    monkeypatch.setattr(uvicorn, "Config", uvicorn.config.Config)
    monkeypatch.setenv("HEADER_TIMEOUT_S", "7")
    monkeypatch.setenv("MAX_HEADER_BYTES", "4096")
    monkeypatch.setenv("WS_MAX_FRAME_BYTES", "65536")
    middlewares = proxy_http.proxy_callback()
    assert [m.cls for m in middlewares] == [m.cls for m in proxy_ws.proxy_callback()]
    config = uvicorn.Config(app, http="h11", lifespan="off")  # as Ray's http_util calls it
    config.load()
    assert config.ws_max_size == 65536
    assert config.http_protocol_class._aicore_head_bounds == (7.0, 4096)


def test_the_proxy_reads_the_settings_names_and_defaults():
    assert Settings.model_fields["header_timeout_s"].default == proxy_http.DEFAULT_HEADER_TIMEOUT_S
    assert Settings.model_fields["max_header_bytes"].default == proxy_http.DEFAULT_MAX_HEADER_BYTES
    assert proxy_http.header_timeout_s({"HEADER_TIMEOUT_S": "2.5"}) == 2.5
    assert proxy_http.max_header_bytes({"MAX_HEADER_BYTES": "65536"}) == 65536
    assert proxy_http.max_header_bytes({"MAX_HEADER_BYTES": "nonsense"}) == proxy_http.DEFAULT_MAX_HEADER_BYTES
    assert proxy_http.header_timeout_s({}) == proxy_http.DEFAULT_HEADER_TIMEOUT_S
