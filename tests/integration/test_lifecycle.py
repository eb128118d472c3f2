"""Lazy load and idle unload through Ray Serve autoscaling to zero, with the real gemma3 GGUF."""

import asyncio
import json
import time

import httpx
import pytest

from scripts.serve_process import ROOT, ServeProcess

DEFAULT, LAZY = "smollm2-135m-instruct", "gemma3-270m"
KEY = "life-key"
IDLE_S = 4


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    models = json.loads((ROOT / "models.json").read_text())["models"]
    lazy = {k: v for k, v in models[LAZY].items() if k != "autoscaling"}
    lazy["autoscaling"] = {"max_replicas": 1, "downscale_delay_s": IDLE_S}  # min_replicas left to the default: 0
    default = {k: v for k, v in models[DEFAULT].items() if k != "autoscaling"}  # the default model: preloaded
    path = tmp_path_factory.mktemp("life") / "models.json"
    path.write_text(json.dumps({"models": {DEFAULT: default, LAZY: lazy}}))
    server = ServeProcess(env={"API_KEYS": KEY}, args={"model_config_path": str(path)}).start(ready_models=(DEFAULT,))
    yield server
    server.stop()


def state(app, model):
    listing = httpx.get(app.base_url + "/api/v1/models", headers={"X-API-Key": KEY}, timeout=60).json()["models"]
    entry = next(m for m in listing if m["name"] == model)
    return entry["state"], entry["replicas"]


def test_lazy_model_loads_once_on_first_use_then_unloads_when_idle(app):
    assert state(app, DEFAULT) == ("ready", 1)
    assert state(app, LAZY) == ("unloaded", 0)  # nothing loaded before the first request

    async def first_requests():
        async with httpx.AsyncClient(base_url=app.base_url, headers={"X-API-Key": KEY}, timeout=300) as client:
            body = {"model": LAZY, "prompt": "The capital of France is", "max_tokens": 4}
            return await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(10)))

    responses = asyncio.run(first_requests())
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.json()["choices"][0]["text"] for r in responses)
    assert state(app, LAZY) == ("ready", 1)  # ten concurrent first requests, one replica, one load

    for _ in range(300):  # idle past downscale_delay_s: Ray Serve removes the replica
        current = state(app, LAZY)
        if current == ("unloaded", 0):
            break
        time.sleep(0.5)
    assert current == ("unloaded", 0)
    assert state(app, DEFAULT) == ("ready", 1)  # the default model stays loaded

    again = httpx.post(app.base_url + "/v1/completions", headers={"X-API-Key": KEY}, timeout=300,
                       json={"model": LAZY, "prompt": "Hello", "max_tokens": 2})
    assert again.status_code == 200  # and loads again on the next request
