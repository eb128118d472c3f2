"""LoRA adapters (peft) on the transformers backend through a real Serve app: `<model>:<adapter>`."""

import openai

from tests.integration.conftest import ADAPTERS, KEY, TINY, TINY_ONNX

GREEDY = {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0, "ignore_eos": True}


def _text(client, model):
    r = client.post("/v1/completions", json={**GREEDY, "model": model})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    return r.json()["choices"][0]["text"]


def _loaded(client):
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == TINY)["loaded_adapters"]


def test_adapters_listed_in_v1_models(formats_server):
    oai = openai.OpenAI(base_url=formats_server.base_url + "/v1", api_key=KEY, max_retries=0)
    ids = {m.id for m in oai.models.list()}
    assert {f"{TINY}:{a}" for a in ADAPTERS} <= ids and TINY in ids
    assert oai.models.retrieve(f"{TINY}:alpha").id == f"{TINY}:alpha"


def test_adapter_changes_output_and_base_stays_unchanged(formats_client):
    base = _text(formats_client, TINY)
    alpha = _text(formats_client, f"{TINY}:alpha")
    beta = _text(formats_client, f"{TINY}:beta")
    assert alpha != base and beta != base and alpha != beta
    assert _text(formats_client, TINY) == base  # the base model is untouched by the loaded adapters
    assert _text(formats_client, f"{TINY}:alpha") == alpha


def test_lru_eviction_and_reload(formats_client):
    first = {name: _text(formats_client, f"{TINY}:{name}") for name in ADAPTERS}  # alpha, beta, gamma in order
    assert _loaded(formats_client) == ["beta", "gamma"]  # max_adapters 2: alpha, least recently used, went
    assert _text(formats_client, f"{TINY}:alpha") == first["alpha"]  # loaded again on demand, same weights
    assert _loaded(formats_client) == ["gamma", "alpha"]


def test_unknown_adapter_404_and_unsupported_backend(formats_client):
    for model in (f"{TINY}:nope", f"{TINY}:", f"{TINY_ONNX}:alpha"):
        r = formats_client.post("/v1/completions", json={**GREEDY, "model": model})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", model
