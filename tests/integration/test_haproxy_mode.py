"""INGRESS_MODE=haproxy (Ray Serve's HAProxy + direct ingress), started the README way.

One real `python -m scripts.run_server` of SmolLM2 with INGRESS_MODE=haproxy and API_HOST=0.0.0.0:
a normal request, SSE, WebSocket and cancel-on-disconnect through HAProxy; the socket table (the
API port is the one non-loopback listener, and HAProxy's own); the client address the app sees;
and stopping the server ends HAProxy. The rest of the suite runs in this mode with
INGRESS_MODE=haproxy in the test run's environment (docs/benchmarks.md says what was run).
"""

from __future__ import annotations

import json
import socket

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from deployments.haproxy_peer import PEER_HEADER
from scripts.serve_process import ServeProcess
from tests.integration.security.conftest import MODEL, _one_model_file, from_address
from tests.integration.security.test_network import KEY, _key, _listeners, _loopback, _status
from tests.integration.sse import disconnect_mid_stream, parse_sse

DIRECT_INGRESS_PORTS = range(30000, 31001)  # Ray's RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT


@pytest.fixture(scope="module")
def server():
    process = ServeProcess(env={"API_KEYS": KEY, "INGRESS_MODE": "haproxy"}, host="0.0.0.0", via_run_server=True,
                           args={"model_config_path": str(_one_model_file())})
    process.start(ready_models=(MODEL,))
    yield process
    process.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=120) as c:
        yield c


def _haproxy_pids(server: ServeProcess) -> list[int]:
    root = psutil.Process(server.proc.pid)
    return [p.pid for p in root.children(recursive=True) if p.name() == "haproxy"]


def test_requests_streams_and_websockets_pass_through_haproxy(server, client):
    assert _haproxy_pids(server), "no HAProxy in the server's processes: the mode was not applied"
    r = client.post("/api/v1/generate", json={"prompt": "Hi", "max_tokens": 4, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["response"] and r.json()["tokens_used"] > 4, r.text
    assert client.get("/v1/models", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "stream": True, "ignore_eos": True}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert len(events) >= 2 and events[-1]["choices"][0]["finish_reason"] == "length"
    url = server.base_url.replace("http://", "ws://", 1) + "/api/v1/ws"
    with connect(url, additional_headers={"X-API-Key": KEY}) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "generate", "id": "g", "prompt": "The sky is", "max_tokens": 6,
                            "ignore_eos": True}))
        tokens = []
        while (message := json.loads(ws.recv()))["type"] == "token":
            tokens.append(message["text"])
        assert message["type"] == "done" and message["response"] == "".join(tokens)
        assert message["usage"]["completion_tokens"] == 6


def _figures(client) -> dict:
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == MODEL)


def test_client_disconnect_cancels_generation(client):
    disconnect_mid_stream(client, lambda: _figures(client))
    assert client.post("/api/v1/generate", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_only_the_api_port_faces_the_network_and_haproxy_opens_nothing_else(server, client):
    client.post("/api/v1/generate", json={"prompt": "hi", "max_tokens": 2}).raise_for_status()
    listeners = _listeners(server)
    assert len(listeners) > 10  # GCS, raylet, agents, dashboard, every replica: all of them were seen
    exposed = [entry for entry in listeners if not _loopback(entry[0])]
    assert [(address, port) for address, port, _ in exposed] == [("0.0.0.0", server.port)], exposed
    haproxy = {(c.laddr.ip, c.laddr.port) for pid in _haproxy_pids(server)
               for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert haproxy == {("0.0.0.0", server.port)}  # the API port is HAProxy's; no stats page, no exporter
    direct = [entry for entry in listeners if entry[1] in DIRECT_INGRESS_PORTS]
    assert direct and all(address == "127.0.0.1" for address, _, _ in direct), direct


def test_the_app_sees_the_client_haproxy_saw_and_no_header_changes_it(server):
    only_10, only_2 = _key(server.base_url, ["10.0.0.0/8"]), _key(server.base_url, ["127.0.0.2/32"])
    with from_address(server.base_url, "127.0.0.2") as c:
        assert _status(c, only_2) == 200 and _status(c, only_10) == 403
    forged = {"X-Forwarded-For": "127.0.0.2", PEER_HEADER: "127.0.0.2 1 guessed-secret"}
    with httpx.Client(base_url=server.base_url, timeout=60) as c:  # from 127.0.0.1
        assert _status(c, only_2) == 403 and _status(c, only_2, **forged) == 403
    # A process on the node that talks to an ingress replica's own port: still itself.
    direct = sorted({port for _, port, _ in _listeners(server) if port in DIRECT_INGRESS_PORTS})
    with httpx.Client(base_url=f"http://127.0.0.1:{direct[0]}", timeout=60) as c:
        assert _status(c, only_2, **{PEER_HEADER: "127.0.0.2 1 guessed-secret"}) == 403
        assert _status(c, only_2) == 403


def test_stopping_the_server_ends_haproxy(server):
    """Last in this module: it stops the server."""
    pids = _haproxy_pids(server)
    assert pids
    server.stop()
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    with socket.socket() as s:  # the API port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", server.port))
