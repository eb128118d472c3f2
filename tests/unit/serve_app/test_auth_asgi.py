"""The HTTP surface of keys in-process (no Ray): the memory store, and STORE_FAILURE_MODE with Redis down.

Model handles are never called here (only listings), so a router without handles suffices;
the real app with real models and Redis is tested in tests/integration/security.
"""

import asyncio
import json

import httpx
import pytest

from core.settings import Settings
from deployments.config import load_models_file
from scripts.serve_process import free_port
from serve_app.app import create_app
from serve_app.model_router import ModelEntry, ModelRouter
from tests import ROOT

BOOT = "unit-boot-key-0123456789"


class _Status:
    """ModelStatus without Ray Serve: no model has replicas."""

    app_name, present, reasons = None, {}, {}

    async def states(self, fresh=False, stale_ok=False):
        return {}


def _app(**settings):
    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, next(iter(models)))
    return create_app(Settings(api_keys=BOOT, **settings), router, None, _Status())


def _run(app, scenario, client_ip="127.0.0.1"):
    async def main():
        transport = httpx.ASGITransport(app=app, client=(client_ip, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await scenario(client)
    asyncio.run(main())


def test_memory_store_keys_limits_and_revocation():
    async def scenario(c):
        boot = {"X-API-Key": BOOT}
        made = (await c.post("/api/v1/keys", headers=boot, json={"name": "m", "rate_limit_per_minute": 2})).json()
        key = {"Authorization": f"Bearer {made['key']}"}
        first = await c.get("/v1/models", headers=key)
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "1"
        assert (await c.get("/v1/models", headers=key)).status_code == 200
        third = await c.get("/v1/models", headers=key)
        assert third.status_code == 429 and third.json()["error"]["type"] == "requests"
        assert (await c.delete(f"/api/v1/keys/{made['id']}", headers=boot)).status_code == 200
        assert (await c.get("/v1/models", headers=key)).json()["error"]["code"] == "key_revoked"
        usage = (await c.get(f"/api/v1/keys/{made['id']}/usage", headers=boot)).json()
        assert usage["requests"] == 3 and usage["errors"] == 1
    _run(_app(), scenario)


@pytest.mark.parametrize("mode,boot_status", [("closed", 200), ("strict", 503)])
def test_redis_down_follows_store_failure_mode(mode, boot_status):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def scenario(c):
        r = await c.get("/v1/models", headers={"X-API-Key": BOOT})
        assert r.status_code == boot_status, r.text
        r = await c.get("/v1/models", headers={"X-API-Key": "aic-some-managed-key"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert (await c.get("/v1/models")).status_code == 401
    _run(_app(redis_url=dead, store_failure_mode=mode), scenario)


def test_api_docs_can_be_turned_off():
    async def on(c):
        assert (await c.get("/openapi.json")).status_code == 200
        assert (await c.get("/docs")).status_code == 200

    async def off(c):
        for path in ("/openapi.json", "/docs", "/redoc"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error", (path, r.text)
        assert (await c.get("/api/v1/health")).status_code == 200  # the API itself is unchanged
    _run(_app(), on)
    _run(_app(docs_enabled=False), off)


def test_metrics_refuse_keys_without_the_metrics_or_admin_scope():
    """Only the refusals here: rendering needs the metrics hub (tests/integration/security/test_access.py)."""
    async def scenario(c):
        boot = {"X-API-Key": BOOT}
        keys = {}
        for scopes in (["inference"], ["metrics"]):
            made = (await c.post("/api/v1/keys", headers=boot, json={"name": "m", "scopes": scopes})).json()
            keys[scopes[0]] = {"X-API-Key": made["key"]}
        refused = await c.get("/api/v1/metrics", headers=keys["inference"])
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
        # a scraper's key reads metrics and nothing else
        for method, path in (("GET", "/v1/models"), ("GET", "/api/v1/keys"), ("POST", "/api/v1/generate")):
            r = await c.request(method, path, headers=keys["metrics"], json={"prompt": "hi"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (path, r.text)
    _run(_app(), scenario)


class _FailedStatus(_Status):
    """Every model failed, with the Serve controller's message (paths and a traceback)."""

    def __init__(self, names):
        self.names = names
        self.reasons = {n: 'Traceback (most recent call last):\n  File "/srv/ai-core/deployments/x.py"' for n in names}

    async def states(self, fresh=False, stale_ok=False):
        return {n: ("failed", 0) for n in self.names}


def test_a_failed_models_reason_is_shown_to_admin_keys_only():
    """Ray's failure text (paths, tracebacks) went to any inference key in /api/v1/models."""
    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, next(iter(models)))
    app = create_app(Settings(api_keys=BOOT), router, None, _FailedStatus(list(models)))

    async def scenario(c):
        boot = {"X-API-Key": BOOT}
        made = {}
        for scopes in (["inference"], ["inference", "admin"]):
            created = (await c.post("/api/v1/keys", headers=boot, json={"name": "m", "scopes": scopes})).json()
            made[len(scopes)] = {"X-API-Key": created["key"]}
        for headers, shown in ((made[1], False), (made[2], True), (boot, True)):
            listing = (await c.get("/api/v1/models", headers=headers)).json()["models"]
            assert listing and all(m["state"] == "failed" for m in listing)
            assert all(bool(m.get("state_reason")) == shown for m in listing), (shown, listing[0])
            if not shown:
                assert "Traceback" not in json.dumps(listing) and "/srv/" not in json.dumps(listing)
    _run(app, scenario)
