"""Model lifecycle with the real GGUF models: lazy load, idle unload, explicit load/unload (drain,
force, disable, idempotence) and the memory budget (refusal, LRU eviction).

One Serve app, three models: the default SmolLM2 (kept loaded), gemma3 (lazy, short idle
timeout, evicts the least recently used idle model when over the budget) and a second SmolLM2
entry "spare" (lazy, long idle timeout, refuses a load over the budget; the explicit load/unload
tests use it so that no idle timeout runs during them). MODEL_MEMORY_BUDGET holds two of the
three.
"""

import asyncio
import json
import os
import time

import httpx
import psutil
import pytest

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.sse import stream_in_thread

DEFAULT, LAZY, SPARE = "smollm2-135m-instruct", "gemma3-270m", "smollm2-spare"
KEY = "life-key-0123456789"
IDLE_S = 15  # gemma3's idle timeout: short for the idle test, long enough for the budget test's steps
MIB = 2**20
BUDGET = 1536 * MIB  # default 512 MiB + gemma3 768 MiB, or + spare 512 MiB, fit; all three do not


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    models = json.loads((ROOT / "models.json").read_text())["models"]
    default = {k: v for k, v in models[DEFAULT].items() if k != "autoscaling"}  # the default model: preloaded
    default["memory"] = 512 * MIB  # the budget's arithmetic below, whatever models.json reserves
    lazy = {k: v for k, v in models[LAZY].items() if k != "autoscaling"}  # min_replicas left to the default: 0
    lazy.update(idle_timeout_s=IDLE_S, memory=768 * MIB, eviction="lru")
    spare = {**default, "memory": 512 * MIB, "eviction": "none", "description": "a second SmolLM2 entry"}
    path = tmp_path_factory.mktemp("life") / "models.json"
    path.write_text(json.dumps({"models": {DEFAULT: default, LAZY: lazy, SPARE: spare}}))
    env = {"API_KEYS": KEY, "MODEL_MEMORY_BUDGET": str(BUDGET), "DRAIN_TIMEOUT_S": "120"}
    server = ServeProcess(env=env, args={"model_config_path": str(path)}).start(ready_models=(DEFAULT,))
    yield server
    server.stop()


def call(app, method, path, body=None, key=KEY):
    return httpx.request(method, app.base_url + path, json=body, headers={"X-API-Key": key}, timeout=600)


def entry(app, model):
    listing = call(app, "GET", "/api/v1/models").json()["models"]
    return next(m for m in listing if m["name"] == model)


def state(app, model):
    found = entry(app, model)
    return found["state"], found["replicas"]


def wait_for(app, model, wanted, polls=300):
    for _ in range(polls):  # bounded: at most `polls` listings
        current = state(app, model)
        if current == wanted:
            return current
        time.sleep(0.5)
    return current


def complete(app, model, max_tokens=4):
    return call(app, "POST", "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": max_tokens})


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


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
    assert entry(app, LAZY)["last_used"] is not None

    assert wait_for(app, LAZY, ("unloaded", 0)) == ("unloaded", 0)  # idle past idle_timeout_s
    assert state(app, DEFAULT) == ("ready", 1)  # the default model stays loaded
    assert complete(app, LAZY).status_code == 200  # and loads again on the next request
    assert wait_for_loads(app, LAZY, 2) == 2  # both loads counted, across the replica's absence


def wait_for_loads(app, model, wanted, polls=60) -> float:
    """aicore_model_loads_total{outcome="ok"} of `model` (replicas report loads in the background)."""
    line = f'aicore_model_loads_total{{model="{model}",outcome="ok"}} '
    for _ in range(polls):
        text = call(app, "GET", "/api/v1/metrics").text
        found = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
        if found and found[0] >= wanted:
            return found[0]
        time.sleep(0.5)
    return found[0] if found else 0.0


def test_one_ingress_replica_keeps_the_metrics_itself_without_a_helper_actor(app):
    """One ingress replica (the default) holds the metrics registry: no `hub` deployment runs, the
    model replicas report their loads to the ingress by name, and its requests are counted there."""
    titles = [" ".join(p.cmdline()) for p in psutil.Process(app.proc.pid).children(recursive=True)]
    assert any("ServeReplica:ai-core:ingress" in t for t in titles)
    assert not any("ServeReplica:ai-core:hub" in t for t in titles)
    assert wait_for_loads(app, DEFAULT, 1) >= 1  # the default model's load, reported by name

    line = f'aicore_requests_total{{model="{DEFAULT}",route="/v1/completions",status="200"}} '

    def completions() -> float:
        text = call(app, "GET", "/api/v1/metrics").text
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))

    before = completions()
    assert all(complete(app, DEFAULT).status_code == 200 for _ in range(3))
    for _ in range(40):  # recorded as each request ends, in the same process
        if completions() >= before + 3:
            break
        time.sleep(0.25)
    assert completions() == before + 3


def test_explicit_load_and_unload_are_idempotent_and_free_the_process(app):
    # gemma3, loaded again by the test above, would leave no room for SPARE in the budget.
    assert call(app, "POST", "/api/v1/models/unload", {"model": LAZY}).json()["state"] == "unloaded"
    loaded = call(app, "POST", "/api/v1/models/load", {"model": SPARE})
    assert loaded.status_code == 200 and loaded.json() == {"model": SPARE, "state": "ready", "replicas": 1,
                                                          "disabled": False}
    again = call(app, "POST", "/api/v1/models/load", {"model": SPARE})
    assert again.status_code == 200 and again.json()["state"] == "ready"
    assert entry(app, SPARE)["resident_memory_bytes"] > 50 * MIB

    unloaded = call(app, "POST", "/api/v1/models/unload", {"model": SPARE})
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded" and unloaded.json()["replicas"] == 0
    assert call(app, "POST", "/api/v1/models/unload", {"model": SPARE}).json()["state"] == "unloaded"
    assert entry(app, SPARE)["resident_memory_bytes"] is None

    # Not waiting: 202 with the state, then the model gets there.
    accepted = call(app, "POST", "/api/v1/models/load", {"model": SPARE, "wait": False})
    assert accepted.status_code == 202 and accepted.json()["state"] == "loading"
    assert wait_for(app, SPARE, ("ready", 1)) == ("ready", 1)
    replica_pid = _replica_pid(app, SPARE)
    assert pid_alive(replica_pid)
    accepted = call(app, "POST", "/api/v1/models/unload", {"model": SPARE, "wait": False})
    assert accepted.status_code == 202 and accepted.json()["state"] == "unloading"
    assert wait_for(app, SPARE, ("unloaded", 0)) == ("unloaded", 0)
    for _ in range(100):  # the replica's process exits: its memory is back with the OS
        if not pid_alive(replica_pid):
            break
        time.sleep(0.2)
    assert not pid_alive(replica_pid)


def _replica_pid(app, model) -> int:
    """The model replica's process id, from the live figures of /api/v1/models."""
    pid = entry(app, model).get("pid")
    assert isinstance(pid, int), entry(app, model)
    return pid


def test_unload_and_load_need_an_admin_key_and_a_known_model(app):
    made = call(app, "POST", "/api/v1/keys", {"name": "inference-only", "scopes": ["inference"]})
    assert made.status_code == 201
    user_key = made.json()["key"]
    for path in ("/api/v1/models/load", "/api/v1/models/unload"):
        refused = call(app, "POST", path, {"model": SPARE}, key=user_key)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
        missing = call(app, "POST", path, {"model": "no-such-model"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        bad = call(app, "POST", path, {"model": SPARE, "unknown": 1})
        assert bad.status_code == 400


def test_unload_drains_a_live_stream_before_freeing(app):
    assert call(app, "POST", "/api/v1/models/load", {"model": SPARE}).json()["state"] == "ready"
    out: dict = {}
    thread = stream_in_thread(app.base_url, KEY, SPARE, 120, out)
    unloaded = call(app, "POST", "/api/v1/models/unload", {"model": SPARE})
    answered_at = time.monotonic()
    thread.join()
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
    assert out["status"] == 200
    chunks = [e for e in out["events"] if "choices" in e]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # the stream ran to its end
    assert not any("error" in e for e in out["events"])
    assert out["ended_at"] <= answered_at  # ordering, not a time limit: drained first, then unloaded


def test_forced_unload_cancels_in_flight_work_with_a_clear_error(app):
    assert call(app, "POST", "/api/v1/models/load", {"model": SPARE}).json()["state"] == "ready"
    out: dict = {}
    thread = stream_in_thread(app.base_url, KEY, SPARE, 1500, out)
    unloaded = call(app, "POST", "/api/v1/models/unload", {"model": SPARE, "force": True})
    thread.join()
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
    errors = [e["error"] for e in out["events"] if "error" in e]
    assert errors and errors[0]["code"] == "model_unloaded" and SPARE in errors[0]["message"]
    assert complete(app, SPARE).status_code == 200  # the next request loads it again


def test_a_disabled_model_is_refused_until_loaded(app):
    off = call(app, "POST", "/api/v1/models/unload", {"model": SPARE, "disable": True})
    assert off.status_code == 200 and off.json()["disabled"] is True and off.json()["replicas"] == 0
    refused = complete(app, SPARE)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_disabled"
    assert state(app, SPARE) == ("unloaded", 0)  # the refused request did not load it
    assert call(app, "POST", "/api/v1/models/load", {"model": SPARE}).json()["disabled"] is False
    assert complete(app, SPARE).status_code == 200


def test_memory_budget_evicts_lru_or_refuses(app):
    assert call(app, "POST", "/api/v1/models/unload", {"model": LAZY}).json()["state"] == "unloaded"
    assert call(app, "POST", "/api/v1/models/load", {"model": SPARE}).json()["state"] == "ready"
    # LAZY (eviction "lru", 768 MiB) does not fit beside DEFAULT and SPARE: the idle SPARE goes first.
    r = complete(app, LAZY)
    assert r.status_code == 200
    assert state(app, SPARE) == ("unloaded", 0) and state(app, LAZY) == ("ready", 1)
    assert state(app, DEFAULT) == ("ready", 1)  # the default model is never evicted
    assert "evicting model smollm2-spare (least recently used) to load gemma3-270m" in app.log()
    # SPARE (eviction "none", 512 MiB) does not fit now: refused with the figures, nothing loaded.
    refused = complete(app, SPARE)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "model_memory_budget_exceeded" and error["param"] == "model"
    assert SPARE in error["message"] and "needs 0.50 GiB" in error["message"] and "1.50 GiB" in error["message"]
    assert "gemma3-270m 0.75 GiB" in error["message"]  # what holds the budget
    assert state(app, SPARE) == ("unloaded", 0)
    explicit = call(app, "POST", "/api/v1/models/load", {"model": SPARE})
    assert explicit.status_code == 409  # an explicit load is held to the same budget
