"""Each setting the README lists, set away from its default, changes what the code does. In-process
(no Ray): the app over a model handle that stands in for a replica (routing logic only); the real
replicas are in tests/integration. Settings covered elsewhere are named at the end of this file."""

import asyncio
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from core.errors import ModelUnavailable
from core.settings import Settings
from core.types import SamplingParams, Usage
from deployments.config import load_models_file
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.serving import GenerationService
from tests.conftest import ROOT
from tests.unit.admissions import admission
from tests.unit.in_process import MODEL, FakeReplica, app_over, router_over, run


def _app(replica=None, **settings):
    return app_over(replica, **{"api_keys": "k", "allow_short_api_keys": True, **settings})


def _replica(**kwargs) -> FakeReplica:
    return FakeReplica(pieces=("piece1 ", "piece2 "), usage=Usage(3, 2), **kwargs)


def test_api_host_and_api_port_reach_serverun(monkeypatch):
    """scripts/serve.sh runs scripts.run_server: it renders serve_config.yaml with them."""
    import scripts.run_server as run_server

    calls = []
    monkeypatch.setattr(run_server.os, "execve", lambda path, argv, env: calls.append(argv))
    monkeypatch.setattr(run_server.os, "chdir", lambda path: None)
    monkeypatch.setenv("API_HOST", "0.0.0.0")
    monkeypatch.setenv("API_PORT", "8123")
    monkeypatch.setenv("API_KEYS", "k")
    monkeypatch.setenv("ALLOW_SHORT_API_KEYS", "true")
    run_server.main()
    rendered = Path(calls[0][2])
    try:
        http = yaml.safe_load(rendered.read_text())["http_options"]
        assert (http["host"], http["port"]) == ("0.0.0.0", 8123)
    finally:
        if rendered != ROOT / "serve_config.yaml":
            os.unlink(rendered)


def test_log_level_sets_every_process_level(tmp_path, monkeypatch):
    import logging

    from serve_app.builder import build_app

    shipped = json.loads((ROOT / "models.json").read_text())["models"][MODEL]
    (tmp_path / "models.json").write_text(json.dumps({"models": {MODEL: shipped}}))
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(tmp_path / "models.json"))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    try:
        app = build_app({})
        assert logging.getLogger("aicore").level == logging.WARNING
        assert app._bound_deployment.init_kwargs["context"].log_level == "WARNING"  # the model replicas' context
    finally:
        logging.getLogger("aicore").setLevel(logging.INFO)


def test_api_key_header_names_the_header():
    async def scenario(c):
        assert (await c.get("/v1/models", headers={"X-Team-Key": "k"})).status_code == 200
        assert (await c.get("/v1/models", headers={"X-API-Key": "k"})).status_code == 401
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer k"})).status_code == 200
    run(_app(api_key_header="X-Team-Key"), scenario)


def test_cors_methods_and_headers():
    async def scenario(c):
        r = await c.options("/v1/models", headers={"Origin": "https://web.example", "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "X-Custom"})
        assert r.status_code == 200
        assert "PATCH" in r.headers["access-control-allow-methods"]
        assert "x-custom" in r.headers["access-control-allow-headers"].lower()
    run(_app(cors_origins="https://web.example", cors_methods="GET,PATCH", cors_headers="X-Custom"), scenario)


def test_ready_min_memory_percent():
    async def scenario(c):
        return await c.get("/api/v1/health/ready")
    assert run(_app(ready_min_memory_percent=0), scenario).status_code == 200
    refused = run(_app(ready_min_memory_percent=100), scenario)
    assert refused.status_code == 503 and "memory is available" in refused.json()["reasons"][0]


def test_request_timeout_s_bounds_the_wait_for_a_first_token():
    replica = _replica(silent=True)
    service = GenerationService(router_over(replica), Settings(request_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="within 0.3s"):
        asyncio.run(service.start(admission(), MODEL, "r1", SamplingParams(max_tokens=4), prompt="hi"))
    assert time.monotonic() - started < 5 and replica.streams[0].cancelled


def test_session_ttl_s_is_the_stored_lifetime():
    app = _app(_replica(), session_ttl_s=123)

    async def scenario(c):
        r = await c.post("/api/v1/chat", headers={"X-API-Key": "k"},
                         json={"session_id": "s1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert r.status_code == 200, r.text
        store = app.state.store
        key = next(k for k in store._data if k.startswith("session:"))
        return await store.ttl(key)

    assert 110 < run(app, scenario) <= 123


def test_cache_shared_across_keys():
    async def scenario(c):
        body = {"prompt": "Same question.", "max_tokens": 4, "temperature": 0}
        first = await c.post("/api/v1/generate", headers={"X-API-Key": "k"}, json=body)
        second = await c.post("/api/v1/generate", headers={"X-API-Key": "k2"}, json=body)
        return first.headers["x-cache"], second.headers["x-cache"]
    assert run(_app(_replica(), api_keys="k,k2", cache_shared_across_keys=True), scenario) == ("MISS", "HIT")
    assert run(_app(_replica(), api_keys="k,k2"), scenario) == ("MISS", "MISS")


def test_batch_concurrency_bounds_items_generating_at_once():
    async def scenario(c):
        items = [{"id": f"i{i}", "type": "generate", "prompt": f"item {i}", "max_tokens": 4} for i in range(6)]
        r = await c.post("/api/v1/generate/batch", headers={"X-API-Key": "k"}, json={"items": items})
        assert r.status_code == 200 and r.json()["totals"]["succeeded"] == 6, r.text
    for concurrency in (1, 3):
        replica = _replica(delay_s=0.05)
        run(_app(replica, batch_concurrency=concurrency, cache_enabled=False), scenario)
        assert replica.peak == concurrency


def test_log_prompt_chars_truncates_logged_prompts(caplog):
    import logging

    app = _app(_replica(), log_prompts=True, log_prompt_chars=5, cache_enabled=False)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("aicore.access").addHandler(handler)
    try:
        async def scenario(c):
            await c.post("/api/v1/generate", headers={"X-API-Key": "k"},
                         json={"prompt": "A rather long prompt", "max_tokens": 4})
        run(app, scenario)
    finally:
        logging.getLogger("aicore.access").removeHandler(handler)
    access = [r for r in records if getattr(r, "log_prompt", None) is not None]
    assert access and access[0].log_prompt == "A rat" and access[0].log_response == "piece"


def test_content_filter_output_patterns_refuse_output():
    from serve_app.access.content_filter import ContentPolicy

    screen = ContentPolicy.from_settings(Settings(content_filter_output_patterns=json.dumps([r"piece\d"]))).output_screen()
    with pytest.raises(Exception, match="content"):
        screen.feed("here is piece1")
        screen.finish()
    assert ContentPolicy.from_settings(Settings()).output_screen() is None


def test_telegram_model_and_history_settings():
    from serve_app.telegram.bot import TelegramBot

    app = _app(telegram_history_messages=2, telegram_history_ttl_s=60)
    chats = app.state.telegram.chats
    assert (chats.max_messages, chats.ttl_s) == (2, 60)

    async def scenario():
        await chats.append("a", [{"role": "user", "content": str(i)} for i in range(5)])
        # a window of 2 sent: the stored message and the next one
        assert [m["content"] for m in (await chats.get("a")).messages] == ["4"]
        assert 0 < await chats.store.ttl("aicore:telegram:chat:a") <= 60
    asyncio.run(scenario())
    service = SimpleNamespace(router=SimpleNamespace(entries={"m1": None, "m2": None}, default_model="m1"))
    bot = TelegramBot(Settings(telegram_model="m2"), service, None, chats)
    assert bot.default_model == "m2"


def test_memory_headroom_sets_the_budget():
    control = _app().state.control
    total = control.budget() + 2 * 2**30  # default headroom 2GiB
    control.settings = Settings(memory_headroom="1GiB")
    assert control.budget() == total - 2**30
    control.settings = Settings(model_memory_budget="3GiB")
    assert control.budget() == 3 * 2**30


def test_model_eviction_lru_unloads_the_least_recently_used_idle_model():
    from serve_app.ops.model_control import InsufficientMemory, ModelControl

    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, MODEL)

    class Status:
        app_name, present, reasons = None, {}, {}

        async def states(self, fresh=False, stale_ok=False):
            return {MODEL: ("ready", 1), "gemma3-270m": ("ready", 1), "minilm-l6-v2": ("unloaded", 0)}

    mib = 2**20
    footprints = {MODEL: 300 * mib, "gemma3-270m": 600 * mib, "minilm-l6-v2": 400 * mib}

    def control(eviction):
        made = ModelControl(router, Status(), Settings(model_memory_budget="1GiB", model_eviction=eviction), footprints)
        made.unloaded = []

        async def reports(model):
            return []

        async def unload(model, **_):
            made.unloaded.append(model)

        made.reports, made.unload = reports, unload
        return made

    lru = control("lru")
    asyncio.run(lru.ensure_fits("minilm-l6-v2"))
    assert lru.unloaded == ["gemma3-270m"]  # never the default model
    refusing = control("none")
    with pytest.raises(InsufficientMemory, match="1.00 GiB model memory budget|budget"):
        asyncio.run(refusing.ensure_fits("minilm-l6-v2"))
    assert refusing.unloaded == []


def test_memory_alert_percent_is_the_replicas_threshold(tmp_path, monkeypatch):
    from deployments.model_deployment import _Reporter
    from serve_app.builder import build_app

    shipped = json.loads((ROOT / "models.json").read_text())["models"][MODEL]
    (tmp_path / "models.json").write_text(json.dumps({"models": {MODEL: shipped}}))
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(tmp_path / "models.json"))
    monkeypatch.setenv("MEMORY_ALERT_PERCENT", "75")
    context = build_app({})._bound_deployment.init_kwargs["context"]
    assert context.memory_alert_percent == 75
    reporter = _Reporter(SimpleNamespace(model_name=MODEL), context.memory_alert_percent)  # outside Serve: no thread
    reporter._alert(70.0)
    assert not reporter.alerting
    reporter._alert(80.0)
    assert reporter.alerting


# Covered by other tests: API_KEYS, MAX_PROMPT_LENGTH, LOG_FORMAT, LOG_DIR, INGRESS_REPLICAS,
# CORS_ORIGINS, BATCH_MAX_ITEMS, TELEGRAM_* (webhook secret, key, username, models, max tokens)
# in tests/integration/conftest.py's server; MODEL_CONFIG_PATH, API_WORKERS, DEBUG, REDIS_PASSWORD,
# CACHE_REDIS_URL in test_spec_settings.py (unit and integration); REDIS_URL, CACHE_ENABLED,
# CACHE_TTL_S, READY_REQUIRES_REDIS in test_cache_sessions.py; MODEL_CACHE_DIR, DEFAULT_MODEL,
# DEFAULT_EMBEDDING_MODEL in the formats/embedding tests; MODEL_MEMORY_BUDGET, DRAIN_TIMEOUT_S in
# test_lifecycle.py; METRICS_FLUSH_S, RATE_LIMIT_PER_MINUTE, TOKENS_PER_MINUTE,
# IP_ALLOWLIST, TRUSTED_PROXIES, MAX_MESSAGES, MAX_BODY_BYTES, CONTENT_FILTER_TERMS/PATTERNS,
# CONTENT_FILTER_OUTPUT_TERMS, LOG_PROMPTS, STORE_FAILURE_MODE in tests/integration/security.
