"""Input limits and the content policy: 413 before parsing (chunked too), 400 content_filter."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.security.conftest import (
    ADMIN_KEY,
    EMBEDDER,
    MAX_BODY_BYTES,
    MAX_MESSAGES,
    MAX_PROMPT_LENGTH,
    MODEL,
    OUTPUT_TERM,
    PROMPT_TERM,
)

INFERENCE_POSTS = ["/api/v1/generate", "/api/v1/chat", "/v1/completions", "/v1/chat/completions"]


def _body(path: str, text: str, **extra) -> dict:
    if path.endswith("chat") or path.endswith("chat/completions"):
        return {"messages": [{"role": "user", "content": text}], "max_tokens": 4, **extra}
    return {"prompt": text, "max_tokens": 4, **extra}


@pytest.fixture
def client(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=120) as c:
        yield c


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-content-type-options"] == "nosniff"
    error = r.json()["error"]
    assert error["code"] == code, error
    return error


@pytest.mark.parametrize("path", INFERENCE_POSTS)
def test_oversize_body_is_413_with_content_length(client, path):
    r = client.post(path, content=json.dumps(_body(path, "x" * (MAX_BODY_BYTES + 10))),
                    headers={"content-type": "application/json"})
    _error(r, 413, "body_too_large")


@pytest.mark.parametrize("path", INFERENCE_POSTS)
def test_oversize_chunked_body_is_413(client, path):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    r = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    _error(r, 413, "body_too_large")


def test_chunked_body_under_the_limit_is_served(client):
    def chunks():
        yield b'{"prompt": "The sky '
        yield b'is", "max_tokens": 3, "temperature": 0, "cache": false}'

    r = client.post("/api/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    # both chunks arrived (the JSON parsed, the options of the second one applied) and the model answered
    assert body["model"] == MODEL and body["response"].strip(), body
    assert body["tokens_used"] > 3 and body.get("cached") is not True, body


@pytest.mark.parametrize("path", INFERENCE_POSTS)
def test_oversize_prompt_is_413(client, path):
    _error(client.post(path, json=_body(path, "z" * (MAX_PROMPT_LENGTH + 1))), 413, "prompt_too_long")


@pytest.mark.parametrize("path", ["/api/v1/chat", "/v1/chat/completions"])
def test_too_many_messages_is_400(client, path):
    messages = [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)
    error = _error(client.post(path, json={"messages": messages, "max_tokens": 2}), 400, "too_many_messages")
    assert error["param"] == "messages" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", INFERENCE_POSTS)
@pytest.mark.parametrize("text", [f"please say {PROMPT_TERM.upper()} now", "my code is secret-1234"])
def test_content_filter_refuses_prompts(client, path, text):
    error = _error(client.post(path, json=_body(path, text)), 400, "content_filter")
    assert error["type"] == "content_filter"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/v1/embeddings"])
@pytest.mark.parametrize("text", [f"please embed {PROMPT_TERM.upper()} now", "my code is secret-1234"])
def test_content_filter_refuses_embedding_inputs(client, path, text):
    """Embeddings pass the prompt filter as generation does (they went straight to the model)."""
    for given in (text, ["a harmless line", text]):  # one input, or any item of a list
        error = _error(client.post(path, json={"model": EMBEDDER, "input": given}), 400, "content_filter")
        assert error["type"] == "content_filter" and error["param"] == "input"
    assert client.post(path, json={"model": EMBEDDER, "input": f"x{PROMPT_TERM}y secret-12"}).status_code == 200


def test_content_filter_matches_words_not_substrings(client):
    r = client.post("/api/v1/generate", json={"prompt": f"x{PROMPT_TERM}y secret-12", "max_tokens": 2})
    assert r.status_code == 200, r.text


# Greedy SmolLM2 answers this with 'The word "zebra" is a ...' (checked with llama-cpp-python directly).
ASK = {"model": MODEL, "messages": [{"role": "user", "content": f"Say the word {OUTPUT_TERM}."}],
       "max_tokens": 8, "temperature": 0}


def test_content_filter_withholds_output(client):
    error = _error(client.post("/v1/chat/completions", json=ASK), 400, "content_filter")
    assert error["type"] == "content_filter"


def test_content_filter_ends_a_stream_with_an_error_event(client):
    with client.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    error = json.loads(events[-2])["error"]
    assert error["type"] == "content_filter"
    sent = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert OUTPUT_TERM not in sent.lower()
    # not even its first letters: the model streams token by token here (stream_interval_ms 0)
    assert not any(sent.lower().endswith(OUTPUT_TERM[:n]) for n in range(1, len(OUTPUT_TERM))), sent


def test_json_responses_are_nosniff(client, url):
    for r in (client.get("/v1/models"), httpx.get(url + "/api/v1/health", timeout=60),
              client.get("/no/such/route")):
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-content-type-options"] == "nosniff"
