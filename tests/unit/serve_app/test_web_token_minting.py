"""Minting web tokens: the `tokens` scope (mint and nothing else), each token within its minter's own
models, limits, expiry and priority (in-process app on the memory store; the real server and Redis:
tests/integration/security/test_access.py)."""

import asyncio
import time

import httpx
import pytest

from core.errors import InvalidRequest
from core.settings import Settings
from deployments.config import load_models_file
from serve_app.access.keys import KeyService, Minter
from serve_app.app import create_app
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.protocol.keys import WebTokenCreate
from serve_app.state.store import MemoryStore
from tests import ROOT

BOOT = "unit-boot-key-0123456789"


def _mint(spec: WebTokenCreate, minter: Minter):
    return asyncio.run(KeyService(MemoryStore(), {"m1", "m2"}).mint_web_token(spec, minter))


def test_a_token_stays_within_its_minters_models_and_limits():
    minter = Minter("key-site", frozenset({"m1"}), requests_per_minute=50, tokens_per_minute=8000,
                    expires_at=int(time.time()) + 120, priority="batch")
    token = _mint(WebTokenCreate(models=["m1"], expires_in_s=3600), minter)
    assert token.minted_by == "key-site" and token.scopes == ["inference"]
    assert token.rate_limit_per_minute == 20 and token.tokens_per_minute == 8000  # left out: the lower
    assert token.expires_at <= minter.expires_at and token.priority == "batch"
    for field, value in (("rate_limit_per_minute", 51), ("tokens_per_minute", 8001)):
        with pytest.raises(InvalidRequest) as info:
            _mint(WebTokenCreate(models=["m1"], **{field: value}), minter)
        assert info.value.param == field
    answers = []
    for models in (["m2"], ["ghost"]):  # outside the minter's list, or missing: one answer
        with pytest.raises(InvalidRequest) as info:
            _mint(WebTokenCreate(models=models), minter)
        assert (info.value.param, info.value.code) == ("models", "model_not_found")
        answers.append(info.value.message.replace(models[0], "<m>"))
    assert answers[0] == answers[1]
    unlimited = Minter("key-admin", None, requests_per_minute=0, tokens_per_minute=0)
    token = _mint(WebTokenCreate(models=["m2"], rate_limit_per_minute=500, tokens_per_minute=90000), unlimited)
    assert (token.rate_limit_per_minute, token.tokens_per_minute) == (500, 90000)


def _app():
    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, next(iter(models)))

    class Status:
        app_name, present, reasons = None, {}, {}

        async def states(self, fresh=False, stale_ok=False):
            return {}

    return create_app(Settings(api_keys=BOOT), router, None, Status()), list(models)


def test_the_tokens_scope_mints_web_tokens_and_does_nothing_else():
    app, models = _app()

    async def scenario(c):
        boot = {"X-API-Key": BOOT}
        r = await c.post("/api/v1/keys", headers=boot, json={"name": "site", "scopes": ["tokens"],
                                                             "models": models[:1], "rate_limit_per_minute": 30})
        assert r.status_code == 201, r.text
        site = {"X-API-Key": r.json()["key"]}
        minted = await c.post("/api/v1/keys/web-tokens", headers=site, json={"models": models[:1]})
        assert minted.status_code == 201, minted.text
        assert minted.json()["minted_by"] == r.json()["id"] and minted.json()["rate_limit_per_minute"] == 20
        outside = await c.post("/api/v1/keys/web-tokens", headers=site, json={"models": models[1:2]})
        assert outside.status_code == 400 and outside.json()["error"]["code"] == "model_not_found"
        for method, path, body in (("GET", "/v1/models", None), ("GET", "/api/v1/keys", None),
                                   ("POST", "/api/v1/keys", {"name": "escalate", "scopes": ["admin"]}),
                                   ("GET", f"/api/v1/keys/{r.json()['id']}", None), ("GET", "/api/v1/metrics", None),
                                   ("POST", "/api/v1/generate", {"prompt": "hi"})):
            refused = await c.request(method, path, headers=site, json=body)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope", path
        inference = (await c.post("/api/v1/keys", headers=boot, json={"name": "i"})).json()
        refused = await c.post("/api/v1/keys/web-tokens", headers={"X-API-Key": inference["key"]},
                               json={"models": models[:1]})
        assert refused.status_code == 403 and "'tokens' or 'admin'" in refused.json()["error"]["message"]

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await scenario(client)
    asyncio.run(main())
