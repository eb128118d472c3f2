"""WS /api/v1/ws, CORS and the chat page's files, through the real Serve app."""

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.conftest import ALLOWED_ORIGIN, DEFAULT, KEY


def _ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/api/v1/ws"


def _recv(ws) -> dict:
    return json.loads(ws.recv())


def test_ws_auth_failures_answer_an_error_and_close(base_url):
    # wrong key in the first message
    with connect(_ws_url(base_url)) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": "wrong"}))
        message = _recv(ws)
        assert message["type"] == "error" and message["id"] is None
        assert message["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008  # policy violation
    # a request before authenticating
    with connect(_ws_url(base_url)) as ws:
        ws.send(json.dumps({"type": "generate", "id": "1", "prompt": "Hi"}))
        assert _recv(ws)["error"]["type"] == "authentication_error"
    # wrong key in the handshake headers
    with connect(_ws_url(base_url), additional_headers={"X-API-Key": "wrong"}) as ws:
        assert _recv(ws)["error"]["code"] == "invalid_api_key"


def test_ws_two_requests_on_one_socket_and_errors_as_messages(base_url):
    with connect(_ws_url(base_url)) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": KEY}))
        ready = _recv(ws)
        assert ready["type"] == "ready" and DEFAULT in ready["models"]
        ws.send(json.dumps({"type": "generate", "id": "g", "prompt": "The sky is", "max_tokens": 12,
                            "ignore_eos": True}))
        ws.send(json.dumps({"type": "chat", "id": "c", "messages": [{"role": "user", "content": "Say hi."}],
                            "max_tokens": 12, "ignore_eos": True}))
        ws.send(json.dumps({"type": "chat", "id": "bad", "messages": [], "max_tokens": 5}))
        ws.send("not json")
        tokens, done, errors = {"g": [], "c": []}, {}, {}
        while len(done) < 2 or len(errors) < 2:
            message = _recv(ws)
            if message["type"] == "token":
                tokens[message["id"]].append(message["text"])
            elif message["type"] == "done":
                done[message["id"]] = message
            else:
                errors[message["id"]] = message["error"]
        for rid in ("g", "c"):
            assert len(tokens[rid]) >= 1
            assert done[rid]["response"] == "".join(tokens[rid])
            assert done[rid]["usage"]["completion_tokens"] == 12
            assert done[rid]["usage"]["total_tokens"] > 12
            assert done[rid]["model"] == DEFAULT
        assert errors["bad"]["param"] == "messages" and errors["bad"]["type"] == "invalid_request_error"
        assert errors[None]["code"] == "invalid_json"
        # the socket still serves after errors
        ws.send(json.dumps({"type": "generate", "id": "again", "prompt": "Hi", "max_tokens": 2}))
        while (message := _recv(ws))["type"] == "token":
            pass
        assert message["type"] == "done" and message["id"] == "again"


def _model_figures(base_url: str, name: str) -> dict:
    r = httpx.get(base_url + "/api/v1/models", headers={"X-API-Key": KEY}, timeout=60)
    return next(m for m in r.json()["models"] if m["name"] == name)


def test_ws_close_cancels_generation(base_url):
    before = _model_figures(base_url, DEFAULT)["cancelled"]
    with connect(_ws_url(base_url), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert _recv(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "generate", "id": "long", "prompt": "Count forever:", "max_tokens": 1500,
                            "ignore_eos": True}))
        received = 0
        while received < 3:
            received += _recv(ws)["type"] == "token"
    # leaving the block closed the socket mid-generation
    for _ in range(300):  # bounded wait for the replica to notice; a full run would not count as cancelled
        figures = _model_figures(base_url, DEFAULT)
        if figures["cancelled"] > before and figures["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert figures["cancelled"] == before + 1
    assert figures["in_flight"] == 0


def test_ws_cancel_message_stops_one_request_and_the_socket_goes_on(base_url):
    before = _model_figures(base_url, DEFAULT)["cancelled"]
    with connect(_ws_url(base_url), additional_headers={"X-API-Key": KEY}) as ws:
        assert _recv(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "generate", "id": "long", "prompt": "Count:", "max_tokens": 1500,
                            "ignore_eos": True}))
        while _recv(ws)["type"] != "token":
            pass
        ws.send(json.dumps({"type": "cancel", "id": "long"}))
        while (message := _recv(ws))["type"] == "token":
            pass
        assert message["type"] == "error" and message["id"] == "long"
        assert message["error"]["code"] == "cancelled"
        ws.send(json.dumps({"type": "cancel", "id": "long"}))
        assert _recv(ws)["error"]["param"] == "id"  # nothing left to cancel
        ws.send(json.dumps({"type": "generate", "id": "next", "prompt": "Hi", "max_tokens": 2}))
        while (message := _recv(ws))["type"] == "token":
            pass
        assert message["type"] == "done" and message["id"] == "next"
    for _ in range(300):
        if _model_figures(base_url, DEFAULT)["cancelled"] > before:
            break
        time.sleep(0.2)
    assert _model_figures(base_url, DEFAULT)["cancelled"] == before + 1


def test_cors_preflight_and_simple_request(base_url):
    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-api-key"}
    r = httpx.options(base_url + "/api/v1/chat", headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "x-api-key" in r.headers["access-control-allow-headers"].lower()

    r = httpx.options(base_url + "/api/v1/chat", headers={**preflight, "Origin": "http://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    assert r.json()["error"]["code"] == "cors_not_allowed"

    r = httpx.get(base_url + "/api/v1/health", headers={"Origin": ALLOWED_ORIGIN})
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    r = httpx.get(base_url + "/api/v1/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_chat_page_and_its_files_are_served(base_url):
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/markdown.js">' in page.text and '<script src="/static/chat.js">' in page.text
    policy = [d.strip() for d in page.headers["content-security-policy"].split(";")]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
                      "object-src 'none'", "base-uri 'none'", "require-trusted-types-for 'script'",
                      "frame-ancestors 'none'"):  # the last: no other site frames it
        assert directive in policy, (directive, policy)
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    script = httpx.get(base_url + "/static/chat.js")
    assert script.status_code == 200 and "/api/v1/ws" in script.text
    renderer = httpx.get(base_url + "/static/markdown.js")
    assert renderer.status_code == 200 and "AICoreMarkdown" in renderer.text
    for code in (script.text, renderer.text):
        assert "innerHTML" not in code and "insertAdjacentHTML" not in code and "outerHTML" not in code
    assert httpx.get(base_url + "/static/chat.css").status_code == 200
