"""Every auth and client-error case answers 4xx with an OpenAI error body, and the replica lives on."""

import httpx
import pytest

from tests.integration.conftest import DEFAULT, KEY, MAX_PROMPT_LENGTH, OTHER_KEY

PROTECTED = [
    ("GET", "/api/v1/models", None),
    ("GET", "/api/v1/metrics", None),
    ("POST", "/api/v1/generate", {"prompt": "hi", "max_tokens": 2}),
    ("POST", "/api/v1/chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
]


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    assert error["request_id"] == r.headers["x-request-id"]
    return error


@pytest.mark.parametrize("method,path,body", PROTECTED)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {KEY}"}])
def test_protected_routes_refuse_bad_keys(base_url, method, path, body, headers):
    r = httpx.request(method, base_url + path, json=body, headers=headers, timeout=60)
    assert _error(r, 401)["type"] == "authentication_error"


@pytest.mark.parametrize("method,path,body", PROTECTED)
@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {OTHER_KEY}"}])
def test_protected_routes_accept_good_keys(base_url, method, path, body, headers):
    r = httpx.request(method, base_url + path, json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text


BAD = [
    ("/api/v1/generate", {"prompt": "x", "temperature": -0.5}, "temperature"),
    ("/api/v1/generate", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/api/v1/generate", {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ("/api/v1/generate", {"prompt": "x", "max_tokens": 5000}, "max_tokens"),
    ("/api/v1/generate", {"prompt": ""}, "prompt"),
    ("/api/v1/generate", {"prompt": 12}, "prompt"),
    ("/api/v1/generate", {"prompt": "x", "top_p": 3}, "top_p"),
    ("/api/v1/generate", {"prompt": "x", "unknown_field": 1}, "unknown_field"),
    ("/api/v1/chat", {"messages": []}, "messages"),
    ("/api/v1/chat", {"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ("/api/v1/chat", {"messages": [{"role": "user"}]}, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 9}, "n"),
    ("/v1/chat/completions", {"messages": "hello"}, "messages"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/completions", {"prompt": "one two three four five", "max_tokens": 2046}, "max_tokens"),
]


@pytest.mark.parametrize("path,body,param", BAD)
def test_invalid_parameters_name_the_parameter(client, path, body, param):
    error = _error(client.post(path, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_prompt_over_context_is_400_from_the_model(client):
    prompt = ("a " * MAX_PROMPT_LENGTH)[:MAX_PROMPT_LENGTH]  # allowed in characters, ~3000 tokens
    error = _error(client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 4}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


def test_streamed_request_with_bad_prompt_gets_json_error_not_a_broken_stream(client):
    body = {"prompt": "word " * 1199, "max_tokens": 1000, "stream": True}
    error = _error(client.post("/v1/completions", json=body), 400)
    assert error["code"] == "context_length_exceeded"


def test_prompt_over_max_prompt_length(client):
    error = _error(client.post("/api/v1/generate", json={"prompt": "a" * (MAX_PROMPT_LENGTH + 1)}), 413)
    assert error["param"] == "prompt"


def test_malformed_json(client):
    r = client.post("/api/v1/generate", content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert _error(r, 400)["code"] == "invalid_json"


def test_unknown_model_is_404(client):
    error = _error(client.post("/api/v1/generate", json={"model": "ghost", "prompt": "x"}), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"


def test_unknown_route_is_404_json(client):
    _error(client.get("/api/v1/nothing-here"), 404)


def test_replica_still_serves_after_bad_input(client):
    for _ in range(3):
        client.post("/api/v1/generate", json={"prompt": "x" * 10, "max_tokens": 5000})
    r = client.post("/api/v1/generate", json={"prompt": "Hello", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["model"] == DEFAULT
