"""`logprobs`, `top_logprobs` and `max_completion_tokens` on `/api/v1/generate`, `/api/v1/chat`,
WebSocket requests and batch items, through the real app (the session's shared server, conftest)
and SmolLM2: the log probabilities come back in OpenAI's chat shape on every channel, and
`max_completion_tokens` bounds the answer as `max_tokens` does."""

import json

import pytest
from websockets.sync.client import connect

from tests.integration.conftest import KEY
from tests.integration.sse import parse_sse

pytestmark = pytest.mark.integration

STORY = "Write a long story about a dragon who learns to bake bread."
# Greedy without a repeat penalty: the chosen token is the likeliest of the alternatives.
ASKED = {"logprobs": True, "top_logprobs": 2, "max_completion_tokens": 8, "temperature": 0, "repeat_penalty": 1.0,
         "ignore_eos": True}
BODIES = {"/api/v1/generate": {"prompt": STORY, **ASKED},
          "/api/v1/chat": {"messages": [{"role": "user", "content": STORY}], **ASKED}}


def _check_tokens(content: list[dict], text: str, alternatives: int) -> None:
    """OpenAI's chat `logprobs.content`: every token's log probability (never above 0, some below),
    `alternatives` of them most likely first, and the tokens' bytes joined are the text."""
    assert all(t["logprob"] <= 0 for t in content) and any(t["logprob"] < 0 for t in content), content
    assert all(isinstance(t["logprob"], float) for t in content)
    for token in content:
        top = token["top_logprobs"]
        assert len(top) == alternatives and all(a["logprob"] <= 0 for a in top), token
        assert [a["logprob"] for a in top] == sorted((a["logprob"] for a in top), reverse=True)
    assert b"".join(bytes(t["bytes"]) for t in content).decode() == text


@pytest.mark.parametrize("path", list(BODIES))
def test_api_v1_returns_logprobs_streamed_and_not(client, path):
    r = client.post(path, json=BODIES[path])
    assert r.status_code == 200, r.text
    whole = r.json()
    content = whole["logprobs"]["content"]
    assert len(content) == 8, content  # max_completion_tokens bounds the answer
    _check_tokens(content, whole["response"], 2)
    # greedy: no alternative with text is likelier (ignore_eos keeps the textless end token from being chosen)
    assert all(a["logprob"] <= t["logprob"] for t in content for a in t["top_logprobs"] if a["bytes"]), content
    streamed = {**BODIES[path], "stream": True, "stream_options": {"include_usage": True}}  # usage: always sent
    with client.stream("POST", path, json=streamed) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    done, tokens = events[-1], events[:-1]
    assert done["done"] and done["finish_reason"] == "length" and "logprobs" not in done, done
    assert done["tokens_used"] == whole["tokens_used"]
    pieces = [t for e in tokens for t in e["logprobs"]["content"]]
    assert [(t["token"], round(t["logprob"], 4)) for t in pieces] == [(t["token"], round(t["logprob"], 4))
                                                                      for t in content]
    _check_tokens(pieces, "".join(e["response"] for e in tokens), 2)
    plain = client.post(path, json={**BODIES[path], "logprobs": None, "top_logprobs": None, "max_tokens": 2})
    assert plain.status_code == 200 and "logprobs" not in plain.json(), plain.text  # omitted when not asked


def test_max_completion_tokens_ends_the_answer_with_length_on_websocket_with_logprobs(base_url):
    with connect(base_url.replace("http://", "ws://", 1) + "/api/v1/ws") as ws:
        ws.send(json.dumps({"type": "auth", "api_key": KEY}))
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "chat", "id": "lp", "messages": [{"role": "user", "content": STORY}],
                            "logprobs": True, "top_logprobs": 1, "max_completion_tokens": 6, "temperature": 0}))
        tokens = []
        while (message := json.loads(ws.recv()))["type"] == "token":
            tokens.append(message)
    assert message["type"] == "done" and "logprobs" not in message, message
    assert message["usage"]["completion_tokens"] == 6 and message["finish_reason"] == "length", message
    content = [t for m in tokens for t in m["logprobs"]["content"]]
    assert len(content) == 6
    _check_tokens(content, message["response"], 1)
    assert "".join(m["text"] for m in tokens) == message["response"]


def test_batch_items_return_logprobs_within_max_completion_tokens(client):
    items = [{"id": "g", **BODIES["/api/v1/generate"], "max_completion_tokens": 5},
             {"id": "c", "type": "chat", **BODIES["/api/v1/chat"], "top_logprobs": 0, "max_completion_tokens": 4},
             {"id": "p", "prompt": STORY, "max_completion_tokens": 3, "temperature": 0, "ignore_eos": True}]
    r = client.post("/api/v1/generate/batch", json={"items": items})
    assert r.status_code == 200, r.text
    generated, chatted, plain = r.json()["results"]
    assert [x["status"] for x in (generated, chatted, plain)] == ["ok"] * 3, r.text
    content = generated["result"]["logprobs"]["content"]
    assert len(content) == 5
    _check_tokens(content, generated["result"]["response"], 2)
    content = chatted["result"]["logprobs"]["content"]
    assert len(content) == 4
    _check_tokens(content, chatted["result"]["response"], 0)
    assert "logprobs" not in plain["result"]
    # three tokens more than its prompt: the same prompt as item g, which took five
    assert plain["result"]["tokens_used"] == generated["result"]["tokens_used"] - 2
