"""The GGUF backend on the tiny llama converted by scripts/convert_to_gguf.py, with GGUF LoRA adapters,
through a real Serve app: `<model>:<adapter>` on llama.cpp."""

import openai

from tests.integration.conftest import GGUF_ADAPTERS, KEY, TINY, TINY_GGUF

GREEDY = {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0, "ignore_eos": True}


def _completion(client, model, **extra):
    r = client.post("/v1/completions", json={**GREEDY, **extra, "model": model})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    return r.json()


def _text(client, model, **extra):
    return _completion(client, model, **extra)["choices"][0]["text"]


def _loaded(client):
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == TINY_GGUF)["loaded_adapters"]


def test_gguf_adapters_listed(formats_server, formats_client):
    oai = openai.OpenAI(base_url=formats_server.base_url + "/v1", api_key=KEY, max_retries=0)
    ids = {m.id for m in oai.models.list()}
    assert {TINY_GGUF} | {f"{TINY_GGUF}:{a}" for a in GGUF_ADAPTERS} <= ids
    assert f"{TINY_GGUF}:gamma" not in ids  # only the adapters of its own models.json entry
    entry = next(m for m in formats_client.get("/api/v1/models").json()["models"] if m["name"] == TINY_GGUF)
    assert entry["type"] == "gguf" and entry["state"] == "ready"
    assert entry["adapters"] == list(GGUF_ADAPTERS)


def test_converted_gguf_matches_transformers_greedy(formats_client):
    """The converter is exact at f32: llama.cpp decodes the same tokens as transformers, base and LoRA.
    The base request comes first with the same prompt, so a KV cache kept across the adapter switch
    would show here as an adapter output that differs from transformers'."""
    for model in (TINY_GGUF, f"{TINY_GGUF}:alpha", TINY_GGUF, f"{TINY_GGUF}:beta"):
        reference = model.replace(TINY_GGUF, TINY)
        gguf, hf = _completion(formats_client, model), _completion(formats_client, reference)
        assert gguf["choices"][0]["text"] == hf["choices"][0]["text"], model
        assert gguf["usage"] == hf["usage"] and gguf["usage"]["completion_tokens"] == GREEDY["max_tokens"]


def test_gguf_adapter_changes_output_and_base_stays_unchanged(formats_client):
    base = _text(formats_client, TINY_GGUF)
    alpha = _text(formats_client, f"{TINY_GGUF}:alpha")
    beta = _text(formats_client, f"{TINY_GGUF}:beta")
    assert alpha != base and beta != base and alpha != beta
    assert _text(formats_client, TINY_GGUF) == base  # adapter cleared for the base request
    assert _text(formats_client, f"{TINY_GGUF}:alpha") == alpha
    # a longer prompt sharing the cached prefix, after an adapter request, still gets the base weights
    longer = {"prompt": GREEDY["prompt"] + " jumps"}
    base_longer = _text(formats_client, TINY_GGUF, **longer)
    assert _text(formats_client, TINY, **longer) == base_longer


def test_gguf_adapter_lru_eviction_and_reload(formats_client):
    alpha = _text(formats_client, f"{TINY_GGUF}:alpha")
    assert _loaded(formats_client) == ["alpha"]
    _text(formats_client, f"{TINY_GGUF}:beta")
    assert _loaded(formats_client) == ["beta"]  # max_adapters 1: alpha was freed
    assert _text(formats_client, f"{TINY_GGUF}:alpha") == alpha  # loaded again on demand, same weights
    assert _loaded(formats_client) == ["alpha"]
    _text(formats_client, TINY_GGUF)
    assert _loaded(formats_client) == ["alpha"]  # a base request keeps the adapter loaded, only unset


def test_gguf_adapter_streams_and_chats(formats_client):
    body = {**GREEDY, "model": f"{TINY_GGUF}:beta", "stream": True}
    with formats_client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3
    r = formats_client.post("/api/v1/chat", json={"model": f"{TINY_GGUF}:alpha", "max_tokens": 4, "temperature": 0,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == f"{TINY_GGUF}:alpha" and r.json()["tokens_used"] > 4
