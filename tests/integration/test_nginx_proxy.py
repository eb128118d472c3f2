"""The shipped nginx.conf in front of the real app: TLS termination, redirect, SSE, WebSocket, body
limit and request buffering. Slow clients and the per-address limits: tests/integration/security/test_slow_clients.py."""

import httpx
import pytest

from tests.deploy.nginx import NginxRun
from tests.integration.conftest import KEY
from tests.integration.sse import parse_sse


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, server):
    run = NginxRun(tmp_path_factory.mktemp("nginx"), server.base_url).start()
    yield {"base": run.base, "http": run.http, "verify": run.verify}
    run.stop()


def test_tls_terminates_and_reaches_the_api(nginx):
    r = httpx.get(nginx["base"] + "/api/v1/health", verify=nginx["verify"])
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-request-id"] and "strict-transport-security" in r.headers
    assert r.headers["server"] == "nginx"  # no version number


def test_plain_http_redirects_to_https(nginx):
    r = httpx.get(nginx["http"] + "/api/v1/health?x=1")
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://127.0.0.1") and r.headers["location"].endswith("/api/v1/health?x=1")


def test_sse_stream_passes_through_intact(nginx):
    body = {"prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": True, "stream": True}
    with httpx.Client(verify=nginx["verify"], headers={"X-API-Key": KEY}, timeout=120) as client:
        with client.stream("POST", nginx["base"] + "/api/v1/generate", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            text = "".join(r.iter_text())
    events = parse_sse(text)
    assert text.rstrip().endswith("data: [DONE]")
    assert events[-1]["done"] is True and events[-1]["finish_reason"] == "length"
    assert "".join(e["response"] for e in events[:-1]).strip()


def test_bodies_over_the_limit_stop_at_nginx(nginx):
    big = {"prompt": "a" * (3 * 1024 * 1024)}
    r = httpx.post(nginx["base"] + "/api/v1/generate", json=big, verify=nginx["verify"],
                   headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 413
    assert "x-request-id" not in r.headers  # answered by nginx, the API never saw it


def test_bodies_larger_than_nginx_memory_buffer_reach_the_api(nginx):
    """Request buffering is on: a body over client_body_buffer_size (256k) goes through nginx's
    temporary file and reaches the API whole (which answers it: too long a prompt)."""
    body = {"prompt": "a" * (600 * 1024), "max_tokens": 1}
    r = httpx.post(nginx["base"] + "/api/v1/generate", json=body, verify=nginx["verify"],
                   headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "prompt_too_long", r.text
    assert r.headers["x-request-id"]  # the API answered


def test_websocket_upgrade_passes_through(nginx):
    import json

    from websockets.sync.client import connect

    url = nginx["base"].replace("https://", "wss://", 1) + "/api/v1/ws"
    with connect(url, ssl=nginx["verify"]) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": KEY}))
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "generate", "id": "g", "prompt": "Hi", "max_tokens": 3, "ignore_eos": True}))
        while (message := json.loads(ws.recv()))["type"] == "token":
            pass
        assert message["type"] == "done" and message["id"] == "g", message
