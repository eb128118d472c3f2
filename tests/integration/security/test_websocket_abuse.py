"""Sockets before auth, through Ray's proxy and the real app, and a socket's
requests in the access log and per-key metrics.

Each test that fails an authentication connects from its own loopback address (127.0.0.1x):
failures are counted per address in the server's Redis, and five in a minute refuse the address.
The package server runs with WS_AUTH_TIMEOUT_S and WS_UNAUTHENTICATED_PER_ADDRESS lowered
(conftest.py). Nothing here waits on a clock of its own: the server closes every socket it
refuses, and the tests read until it does.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.security.conftest import ADMIN_KEY, MODEL, WS_AUTH_TIMEOUT_S, WS_UNAUTHENTICATED_PER_ADDRESS

INGRESS_REPLICAS = 2  # conftest.py
AUTH_FRAME_BYTES = 4096  # the defaults of WS_AUTH_FRAME_BYTES and WS_MAX_FRAME_BYTES
MAX_FRAME_BYTES = 1_048_576


def _connect(url: str, source: str = "127.0.0.1", key: str | None = None):
    """A socket to WS /api/v1/ws whose connection leaves from `source`."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), source_address=(source, 0))
    return connect(url.replace("http://", "ws://", 1) + "/api/v1/ws", sock=sock, compression=None,
                   additional_headers={"X-API-Key": key} if key else None, max_size=None)


def _until_closed(ws) -> tuple[int | None, str | None, list[dict]]:
    """Read every message until the server closes: (close code, reason, messages)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv()))
    except ConnectionClosed as closed:
        frame = closed.rcvd
        return (frame.code, frame.reason, messages) if frame else (None, None, messages)


def _send(ws, text: str) -> None:
    try:
        ws.send(text)
    except (ConnectionClosed, OSError):  # the server may close while a large message is still going out
        pass


def _chat(request_id: str, messages: int = 1) -> str:
    return json.dumps({"type": "chat", "id": request_id, "model": MODEL, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "hi"}] * messages})


def test_a_large_first_message_is_refused_for_its_size_not_parsed(url):
    first = _chat("big", messages=10_000)  # ~340 KB: under the proxy's limit, over the auth message's
    assert AUTH_FRAME_BYTES < len(first) < MAX_FRAME_BYTES
    with _connect(url, "127.0.0.11") as ws:
        _send(ws, first)
        code, reason, messages = _until_closed(ws)
    assert (code, reason) == (1008, f"the first message must be auth, at most {AUTH_FRAME_BYTES} bytes")
    assert [m["error"]["code"] for m in messages] == ["auth_required"]  # not too_many_messages: never validated


def test_a_first_message_of_another_type_is_refused_unread(url):
    invalid = json.dumps({"type": "chat", "id": "x", "messages": "not a list"})  # a validation error, if read
    for first in (_chat("small"), invalid, json.dumps({"type": "cancel", "id": "x"})):
        with _connect(url, "127.0.0.12") as ws:
            _send(ws, first)
            code, reason, messages = _until_closed(ws)
        assert (code, reason) == (1008, 'the first message must be {"type": "auth", ...}'), first
        assert [m["error"]["code"] for m in messages] == ["auth_required"], first


def test_a_first_message_over_the_frame_limit_is_closed_by_the_proxy(url, redis_server):
    with _connect(url, "127.0.0.13") as ws:
        _send(ws, json.dumps({"type": "auth", "api_key": "k" * (2 * MAX_FRAME_BYTES)}))
        code, reason, messages = _until_closed(ws)
    # No answer: uvicorn in Ray's proxy cut it. Its close frame (1009) can be lost when the socket is
    # closed while the client is still sending (the unread rest resets the connection): then none.
    assert code in (1009, None) and messages == [], (code, reason, messages)
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for _ in range(100):  # the app saw the cut and counts it as the address's failed authentication
        if store.get("aicore:wsauth:failures:127.0.0.13") == "1":
            break
        time.sleep(0.1)
    assert store.get("aicore:wsauth:failures:127.0.0.13") == "1"


def test_a_message_over_the_frame_limit_after_auth_is_closed_by_the_proxy(url):
    with _connect(url, key=ADMIN_KEY) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        _send(ws, _chat("big", messages=40_000))  # ~1.3 MB: over WS_MAX_FRAME_BYTES
        with pytest.raises(ConnectionClosed) as closed:  # no answer: closed (an answer would be the app's)
            ws.recv()
    # uvicorn in Ray's proxy refused it (the app's own check would answer body_too_large first).
    # Its close frame (1009) is lost when the socket closes while the client still sends: then none.
    received = closed.value.rcvd
    assert received is None or received.code == 1009, closed.value


def test_too_many_unauthenticated_sockets_from_one_address_are_refused(url):
    """Caps are per ingress replica: one more socket than all replicas together may hold is refused
    whichever replica each lands on. The held ones close at the auth timeout."""
    count = INGRESS_REPLICAS * WS_UNAUTHENTICATED_PER_ADDRESS + 1
    sockets = [_connect(url, "127.0.0.14") for _ in range(count)]
    outcomes = []
    for ws in sockets:
        with ws:
            outcomes.append(_until_closed(ws))
    refused = [o for o in outcomes if o[1] == "too many unauthenticated sockets from this address"]
    timed_out = [o for o in outcomes if o[1] == f"no auth message within {WS_AUTH_TIMEOUT_S:g}s"]
    assert refused and len(refused) + len(timed_out) == count, outcomes
    assert {(o[0], o[2][0]["error"]["code"]) for o in refused} == {(1008, "too_many_unauthenticated_sockets")}
    assert {o[0] for o in timed_out} == {1008}


def test_an_unauthenticated_socket_is_closed_after_the_timeout(url):
    started = time.monotonic()
    with _connect(url, "127.0.0.15") as ws:
        code, reason, messages = _until_closed(ws)
    assert (code, reason) == (1008, f"no auth message within {WS_AUTH_TIMEOUT_S:g}s")
    assert [m["error"]["code"] for m in messages] == ["auth_timeout"]
    assert time.monotonic() - started >= WS_AUTH_TIMEOUT_S * 0.9  # not closed early


def test_repeated_auth_failures_refuse_the_address_for_a_while(url):
    for _ in range(5):  # WS_AUTH_FAILURES
        with _connect(url, "127.0.0.16") as ws:
            _send(ws, json.dumps({"type": "auth", "api_key": "not-a-key-0123456789"}))
            code, reason, messages = _until_closed(ws)
        assert (code, reason, messages[0]["error"]["code"]) == (1008, "authentication failed", "invalid_api_key")
    for _ in range(2):  # a good key now: refused all the same (by the app, then by Ray's proxy, which learnt it)
        with _connect(url, "127.0.0.16") as ws:
            _send(ws, json.dumps({"type": "auth", "api_key": ADMIN_KEY}))
            first = json.loads(ws.recv())
            assert first["type"] == "error" and first["error"]["code"] == "too_many_auth_failures", first
            code, reason, messages = _until_closed(ws)
        assert code == 1008 and re.fullmatch(r"too many failed authentications from this address: retry in \d+ s",
                                             reason), reason
    with _connect(url, "127.0.0.17") as ws:  # another address is not
        _send(ws, json.dumps({"type": "auth", "api_key": ADMIN_KEY}))
        assert json.loads(ws.recv())["type"] == "ready"


def _access_lines(server, key_id: str, want: int) -> list[str]:
    lines: list[str] = []
    for _ in range(100):
        lines = [line for line in server.log().splitlines()
                 if "aicore.access" in line and f'key_id="{key_id}"' in line and 'route="/api/v1/ws"' in line]
        if len(lines) >= want:
            break
        time.sleep(0.2)
    return lines


def _key_requests(admin: httpx.Client, key_id: str, want: float) -> float | None:
    name = f'aicore_key_requests_total{{key_id="{key_id}"}}'
    value = None
    for _ in range(100):
        for line in admin.get("/api/v1/metrics").text.splitlines():
            if line.startswith(name + " "):
                value = float(line.split(" ")[1])
        if value is not None and value >= want:
            break
        time.sleep(0.2)
    return value


def test_a_sockets_requests_are_in_the_access_log_and_per_key_metrics(url, sec_server, admin, make_key):
    key = make_key(scopes=["inference"])
    with _connect(url, key=key["key"]) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        for i in range(3):
            ws.send(json.dumps({"type": "generate", "id": f"g{i}", "prompt": "Hello", "max_tokens": 2, "model": MODEL}))
            while (message := json.loads(ws.recv()))["type"] != "done":
                assert message["type"] == "token", message
    lines = _access_lines(sec_server, key["id"], want=4)  # three requests and the socket itself
    requests = [line for line in lines if "ws_id=" in line]
    assert len(requests) == 3, lines
    for i, line in enumerate(sorted(requests, key=lambda line: re.search(r'ws_id="(g\d)"', line).group(1))):
        assert all(field in line for field in ('method="WS"', "status=200", f'model="{MODEL}"', f'ws_id="g{i}"',
                                               'client_ip="127.0.0.1"', "prompt_tokens=", "completion_tokens=2"))
    assert len({re.search(r"request_id=(\S+)", line).group(1) for line in requests}) == 3
    assert _key_requests(admin, key["id"], want=3) == 3  # the socket's upgrade is not a request
    usage = admin.get(f"/api/v1/keys/{key['id']}/usage").json()
    assert usage["requests"] == 3
