"""/api/v1 through the real Serve app and the real SmolLM2 and gemma3 GGUF models."""

import re
from datetime import datetime

from tests.integration.conftest import ALL_MODELS, DEFAULT, GEMMA, MINILM, MINILM_INT8
from tests.integration.sse import parse_sse

FIELDS = {"response", "model", "tokens_used", "processing_time", "timestamp", "cached"}


def _check_response(body: dict, model: str) -> None:
    assert set(body) == FIELDS
    assert body["model"] == model
    assert isinstance(body["response"], str) and body["response"].strip()
    assert isinstance(body["tokens_used"], int) and body["tokens_used"] > 0
    assert body["processing_time"] > 0
    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0


def test_health_needs_no_key_and_lists_states(base_url):
    import httpx

    r = httpx.get(base_url + "/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": {name: "ready" for name in ALL_MODELS}}


def test_models_listing(client):
    body = client.get("/api/v1/models").json()
    assert body["default_model"] == DEFAULT
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == ALL_MODELS
    assert body["default_embedding_model"] == MINILM
    smol = models[DEFAULT]
    assert (smol["type"], smol["task"], smol["format"], smol["state"], smol["replicas"]) == (
        "gguf", "generate", "Q4_1", "ready", 1)
    assert (models[MINILM]["type"], models[MINILM]["task"]) == ("transformers", "embed")
    assert (models[MINILM_INT8]["type"], models[MINILM_INT8]["task"]) == ("onnx", "embed")
    assert smol["resident_memory_bytes"] > 50_000_000  # the weights really are in the replica


def test_generate_default_model(client):
    r = client.post("/api/v1/generate", json={"prompt": "The sky is", "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    _check_response(r.json(), DEFAULT)


def test_chat_answers_coherently(client):
    r = client.post(
        "/api/v1/chat",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 20, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    _check_response(body, DEFAULT)
    assert re.search(r"\b(hello|hi)\b", body["response"].lower()), body["response"]


def test_chat_second_model_with_configured_template(client):
    r = client.post(
        "/api/v1/chat",
        json={"model": GEMMA, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
    )
    assert r.status_code == 200, r.text
    _check_response(r.json(), GEMMA)


def test_generate_stream_is_sse_ending_in_done(client):
    r = client.post("/api/v1/generate", json={"prompt": "Once upon a time", "max_tokens": 12, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    pieces, final = events[:-1], events[-1]
    assert pieces and all(e["done"] is False and e["model"] == DEFAULT for e in pieces)
    assert final["done"] is True and final["finish_reason"] in ("stop", "length")
    assert FIELDS <= set(final) and final["tokens_used"] > 0
    assert "".join(e["response"] for e in pieces).strip()


def test_stop_sequence_and_max_tokens(client):
    greedy = {"prompt": "List the numbers: 1, 2, 3,", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    full = client.post("/v1/completions", json=greedy).json()
    assert full["usage"]["completion_tokens"] == 12 and full["choices"][0]["finish_reason"] == "length"
    text = full["choices"][0]["text"]
    stop = text.strip().split()[1]  # a word the model really produces
    cut = client.post("/v1/completions", json={**greedy, "stop": [stop]}).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert stop not in cut["choices"][0]["text"]
    assert text.startswith(cut["choices"][0]["text"])


def test_seed_makes_sampling_repeatable(client):
    body = {"prompt": "My favourite food is", "max_tokens": 16, "temperature": 1.0, "seed": 1234, "cache": False}
    first = client.post("/api/v1/generate", json=body).json()["response"]
    second = client.post("/api/v1/generate", json=body).json()["response"]
    assert first == second
