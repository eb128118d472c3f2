"""Slow and many clients: directly against the API port and through the shipped
nginx.conf, hundreds of connections that send their headers or body a byte at a time are held
open while normal requests (GET /api/v1/health, an authenticated GET /v1/models) are still served.

- Directly: a body that trickles in longer than BODY_TIMEOUT_S (5 s here) answers 408
  `body_timeout` and the connection is closed; headers that never end answer 408 `header_timeout`
  after HEADER_TIMEOUT_S (10 s), and a head over MAX_HEADER_BYTES 431 as it arrives, from Ray's
  proxy (serve_app/http/proxy_http.py; docs/security.md#slow-and-large-clients).
- Through nginx: a header that never ends is closed at client_header_timeout; a slow upload is
  read whole by nginx before the API sees it (request buffering), so the API never times it out;
  more than `limit_conn` requests at once from one address, or a burst over `limit_req`, answer
  nginx's JSON 429, while other addresses are served.

Flood connections leave from 127.0.0.2 and up (each test its own address, so nginx's per-address
limits of one test do not touch the next); normal requests leave from 127.0.0.1. Hang guards only:
nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest

from tests.deploy.nginx import NginxRun
from tests.integration.security.conftest import BODY_TIMEOUT_S

FLOOD = 200  # slow connections per flood
LIMIT_CONN, LIMIT_REQ_BURST = 32, 50  # configs/nginx.conf: limit_conn aicore_conn / limit_req burst
HEADER_TIMEOUT_S = 10  # configs/nginx.conf: client_header_timeout; HEADER_TIMEOUT_S's default (Ray's proxy)
MAX_HEADER_BYTES = 32768  # MAX_HEADER_BYTES's default
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, url):
    run = NginxRun(tmp_path_factory.mktemp("nginx-slow"), url).start()
    yield run
    run.stop()


@pytest.fixture(scope="module")
def inference_key(url):
    from tests.integration.security.conftest import ADMIN_KEY

    r = httpx.post(url + "/api/v1/keys", json={"name": "slow-clients", "scopes": ["inference"]},
                   headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["key"]


class Flood:
    """`count` connections from `source` that start a request and then send one more byte per
    connection every `drip_s`: `headers` never ends its header; `body` sends a whole header
    announcing a body and then trickles the body."""

    def __init__(self, port: int, source: str, count: int, kind: str, tls=None, path: str = CHAT,
                 drip_s: float = 1.0, headers: str = ""):
        self.port, self.source, self.count, self.kind, self.tls = port, source, count, kind, tls
        self.path, self.drip_s, self.extra = path, drip_s, headers
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.answers: dict[int, bytes] = {}
        self._tasks: list[asyncio.Task] = []

    def _start(self) -> bytes:
        if self.kind == "headers":
            return "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".encode()
        return (f"POST {self.path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: 10000\r\n{self.extra}\r\n{{").encode()

    async def _open_one(self, gate: asyncio.Semaphore):
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0), ssl=self.tls,
                server_hostname="localhost" if self.tls else None)
            writer.write(self._start())
            await writer.drain()
            return reader, writer

    async def __aenter__(self) -> "Flood":
        gate = asyncio.Semaphore(50)
        self.connections = list(await asyncio.gather(*(self._open_one(gate) for _ in range(self.count))))
        self._tasks = [asyncio.create_task(self._drip())]
        self._tasks += [asyncio.create_task(self._listen(i, r)) for i, (r, _) in enumerate(self.connections)]
        return self

    async def _drip(self):
        while True:
            await asyncio.sleep(self.drip_s)
            for i, (_, writer) in enumerate(self.connections):
                if i not in self.answers and not writer.is_closing():
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write(b"a")

    async def _listen(self, i: int, reader: asyncio.StreamReader):
        """What the server answered on connection i (b"" when it closed without an answer)."""
        data = b""
        with contextlib.suppress(OSError):
            while True:
                piece = await reader.read(65536)
                data += piece
                if not piece or _complete(data):
                    break
        self.answers[i] = data

    def open(self) -> int:
        """Connections the server has neither answered nor closed."""
        return self.count - len(self.answers)

    async def until(self, condition, what: str, guard_s: float = 60):
        deadline = time.monotonic() + guard_s  # a hang guard, not a timing check
        while not condition():
            assert time.monotonic() < deadline, f"{what}: {len(self.answers)} of {self.count} answered or closed"
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc):
        for task in self._tasks:
            task.cancel()
        for _, writer in self.connections:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _json(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def _headers(answer: bytes) -> dict:
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


async def _normal_requests_served(base: str, key: str, verify=True, rounds: int = 3):
    """Normal clients (from 127.0.0.1) get their answers while the flood is held."""
    async with httpx.AsyncClient(base_url=base, verify=verify, timeout=60) as client:
        for _ in range(rounds):
            health = await client.get("/api/v1/health")
            assert health.status_code == 200 and health.json()["status"] == "ok", health.text
            models = await client.get("/v1/models", headers={"X-API-Key": key})
            assert models.status_code == 200, models.text
            assert models.json()["data"], models.text


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------- API port


def test_direct_slow_headers_leave_normal_requests_served_and_answer_408(url, inference_key):
    """200 headers a byte a second: while Ray's proxy holds them everyone else is served; after
    HEADER_TIMEOUT_S each answers 408 `header_timeout` and is closed (the app never saw them)."""
    async def run():
        async with Flood(_port(url), "127.0.0.2", FLOOD, "headers") as flood:
            await asyncio.sleep(2)  # a few drips in
            await _normal_requests_served(url, inference_key)
            assert flood.open() == FLOOD  # still held: the flood was on while the others were served
            await flood.until(lambda: flood.open() == 0, "slow headers answered by the proxy",
                              guard_s=HEADER_TIMEOUT_S + 60)
            answers = list(flood.answers.values())
        assert [_status(a) for a in answers] == [408] * FLOOD
        assert _json(answers[0])["error"]["code"] == "header_timeout"
        assert _headers(answers[0])["connection"] == "close"
    asyncio.run(run())


def test_direct_huge_header_answers_431(url, inference_key):
    """Ray's proxy (httptools) would keep every header byte it is given (256 MiB grew it by
    480 MiB: docs/security.md): past MAX_HEADER_BYTES it answers 431 and closes. (The head is sent
    just over the limit: a server closing on unread bytes resets the connection, which could
    drop its answer here; tests/unit/serve_app/http/test_proxy_http.py shows the count runs as bytes arrive.)"""
    async def run():
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url), local_addr=("127.0.0.8", 0))
        writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 1024))
        answer = await asyncio.wait_for(reader.read(), timeout=60)  # a hang guard
        writer.close()
        await _normal_requests_served(url, inference_key, rounds=1)
        return answer

    answer = asyncio.run(run())
    assert _status(answer) == 431 and _json(answer)["error"]["code"] == "headers_too_large", answer[:300]


def test_direct_slow_bodies_answer_408_and_normal_requests_are_served(url, inference_key):
    """200 bodies a byte a second: each answers 408 `body_timeout` after BODY_TIMEOUT_S and is
    closed; meanwhile everyone else is served."""
    async def run():
        async with Flood(_port(url), "127.0.0.3", FLOOD, "body") as flood:
            await _normal_requests_served(url, inference_key, rounds=1)
            await flood.until(lambda: flood.open() == 0, "every slow body answered", guard_s=BODY_TIMEOUT_S + 60)
            answers = list(flood.answers.values())
        statuses = [_status(a) for a in answers]
        assert statuses == [408] * FLOOD, sorted(set(statuses))
        error = _json(answers[0])["error"]
        assert error["code"] == "body_timeout" and error["type"] == "invalid_request_error"
        assert error["request_id"]
        assert _headers(answers[0])["connection"] == "close"
        await _normal_requests_served(url, inference_key, rounds=1)
    asyncio.run(run())


# ---------------------------------------------------------------------------------- through nginx


def test_nginx_slow_headers_are_closed_and_normal_requests_served(nginx, inference_key):
    async def run():
        async with Flood(nginx.https_port, "127.0.0.4", FLOOD, "headers", tls=nginx.verify) as flood:
            await asyncio.sleep(2)
            await _normal_requests_served(nginx.base, inference_key, verify=nginx.verify)
            assert flood.open() == FLOOD  # held while the others were served
            # nginx gives up on a header that has not ended within client_header_timeout (10 s;
            # its default is 60 s: the guard is well below that).
            await flood.until(lambda: flood.open() == 0, "slow headers closed by nginx", guard_s=HEADER_TIMEOUT_S * 3)
        assert all(a == b"" or _status(a) == 408 for a in flood.answers.values())
    asyncio.run(run())


def test_nginx_reads_a_slow_upload_whole_before_the_api_sees_it(nginx, inference_key):
    """A body sent over twice BODY_TIMEOUT_S, each piece within nginx's client_body_timeout:
    nginx buffers it, the API gets it at once and answers it (without buffering it would be 408)."""
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    pieces = 16
    step = len(body) // pieces + 1

    async def run():
        reader, writer = await asyncio.open_connection("127.0.0.1", nginx.https_port, local_addr=("127.0.0.5", 0),
                                                       ssl=nginx.verify, server_hostname="localhost")
        writer.write((f"POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {inference_key}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode())
        for start in range(0, len(body), step):
            writer.write(body[start:start + step])
            await writer.drain()
            await asyncio.sleep(BODY_TIMEOUT_S * 2 / pieces)
        answer = await asyncio.wait_for(reader.read(), timeout=120)  # a hang guard
        writer.close()
        return answer

    answer = asyncio.run(run())
    assert _status(answer) == 200, answer[:600]
    assert _headers(answer)["x-request-id"]


def test_nginx_slow_bodies_over_limit_conn_answer_429_per_address(nginx, inference_key):
    """One address holding LIMIT_CONN uploads: its next requests answer 429 at nginx (JSON, as the
    API's own 429), while another address is served."""
    extra = LIMIT_CONN + 8  # within limit_req's burst: only limit_conn refuses here

    async def run():
        async with Flood(nginx.https_port, "127.0.0.6", extra, "body", tls=nginx.verify) as flood:
            await flood.until(lambda: len(flood.answers) >= extra - LIMIT_CONN, "connections over limit_conn refused")
            await asyncio.sleep(1)  # any further answer would show here
            refused = list(flood.answers.values())
            assert flood.open() == LIMIT_CONN  # the others are still uploading
            await _normal_requests_served(nginx.base, inference_key, verify=nginx.verify, rounds=1)
            async with httpx.AsyncClient(base_url=nginx.base, verify=nginx.verify, timeout=60,
                                         transport=httpx.AsyncHTTPTransport(local_address="127.0.0.6",
                                                                            verify=nginx.verify)) as same:
                assert (await same.get("/api/v1/health")).status_code == 429  # the same address is at its limit
        return refused

    refused = asyncio.run(run())
    assert [_status(a) for a in refused] == [429] * (extra - LIMIT_CONN)
    assert _json(refused[0])["error"]["code"] == "rate_limit_exceeded"
    assert _headers(refused[0])["retry-after"] == "1"
    assert "limiting connections" in nginx.errors()


def test_nginx_burst_over_limit_req_answers_429(nginx, inference_key):
    """Many quick requests from one address (fewer at once than limit_conn): past the burst,
    nginx answers 429 itself; another address is still served."""
    total, concurrency = 300, 16

    async def run():
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.7", verify=nginx.verify)
        async with httpx.AsyncClient(base_url=nginx.base, transport=transport, timeout=60) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one():
                async with gate:
                    return await client.get("/api/v1/health")
            answers = await asyncio.gather(*(one() for _ in range(total)))
        await _normal_requests_served(nginx.base, inference_key, verify=nginx.verify, rounds=1)
        return answers

    answers = asyncio.run(run())
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    assert statuses.count(200) >= LIMIT_REQ_BURST  # the burst is served
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and refused.headers["retry-after"] == "1"
    assert "x-request-id" not in refused.headers  # answered by nginx, the API never saw it
    assert "limiting requests" in nginx.errors()
