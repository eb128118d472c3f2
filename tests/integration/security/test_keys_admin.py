"""Key management through the admin API and the CLI: shown once, stored hashed, rotate, revoke, usage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time

import httpx
import redis

from scripts.serve_process import ROOT
from tests.integration.security.conftest import ADMIN_KEY, MODEL


def test_key_is_shown_once_and_stored_only_as_a_hash(admin, redis_server, make_key):
    created = make_key(owner="ops", scopes=["inference"], models=[MODEL], default_model=MODEL,
                       rate_limit_per_minute=30, tokens_per_minute=900, ip_allowlist=["10.0.0.0/8", "::1/128"])
    assert created["key"].startswith("aic-") and created["key_prefix"] == created["key"][:8]
    shown = admin.get(f"/api/v1/keys/{created['id']}").json()
    assert "key" not in shown and {k: v for k, v in created.items() if k != "key"} == shown
    listed = admin.get("/api/v1/keys", params={"search": created["id"]}).json()["data"]  # the list is paged
    assert [k["id"] for k in listed] == [created["id"]] and all("key" not in k for k in listed)
    r = redis.Redis.from_url(redis_server.url)
    stored = []
    for name in r.keys("*"):
        kind = r.type(name)
        if kind == b"string":
            stored.append(r.get(name))
        elif kind == b"hash":
            stored.extend(v for pair in r.hgetall(name).items() for v in pair)
        elif kind == b"set":
            stored.extend(r.smembers(name))
        elif kind == b"stream":  # the audit log
            stored.extend(v for _, fields in r.xrange(name) for v in fields.values())
        stored.append(name)
    everything = b"\n".join(stored)
    assert created["key"].encode() not in everything
    assert hashlib.sha256(created["key"].encode()).hexdigest().encode() in everything


def test_patch_changes_only_what_is_sent_and_is_validated(admin, make_key):
    created = make_key(owner="a", rate_limit_per_minute=3)
    r = admin.patch(f"/api/v1/keys/{created['id']}", json={"owner": "b", "tokens_per_minute": 50})
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == "b" and r.json()["rate_limit_per_minute"] == 3 and r.json()["tokens_per_minute"] == 50
    assert admin.patch(f"/api/v1/keys/{created['id']}", json={"rate_limit_per_minute": None}).json()[
        "rate_limit_per_minute"] is None
    for bad, param in (({"ip_allowlist": ["300.1.1.1/8"]}, "ip_allowlist"), ({"scopes": ["root"]}, "scopes.0"),
                       ({"models": ["nope"]}, "models"), ({"enabled": None}, "enabled"), ({"id": "x"}, "id")):
        r = admin.patch(f"/api/v1/keys/{created['id']}", json=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = admin.get("/api/v1/keys/key-doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"


def test_default_model_and_disable_enable(url, admin, make_key):
    created = make_key(default_model=MODEL)
    headers = {"X-API-Key": created["key"]}
    r = httpx.post(url + "/v1/completions", headers=headers, json={"prompt": "Hi", "max_tokens": 2}, timeout=120)
    assert r.status_code == 200 and r.json()["model"] == MODEL
    admin.patch(f"/api/v1/keys/{created['id']}", json={"enabled": False})
    assert httpx.get(url + "/v1/models", headers=headers, timeout=60).json()["error"]["code"] == "key_disabled"
    admin.patch(f"/api/v1/keys/{created['id']}", json={"enabled": True})
    assert httpx.get(url + "/v1/models", headers=headers, timeout=60).status_code == 200


def test_key_expires_at_its_time(url, make_key):
    created = make_key(expires_at=int(time.time()) + 2)
    headers = {"X-API-Key": created["key"]}
    assert httpx.get(url + "/v1/models", headers=headers, timeout=60).status_code == 200
    time.sleep(3)
    assert httpx.get(url + "/v1/models", headers=headers, timeout=60).json()["error"]["code"] == "key_expired"


def test_usage_counts_requests_tokens_errors_and_metrics(url, admin, make_key):
    created = make_key()
    headers = {"Authorization": f"Bearer {created['key']}"}
    ok = httpx.post(url + "/v1/completions", headers=headers, timeout=120,
                    json={"prompt": "The sky is", "max_tokens": 4, "ignore_eos": True})
    bad = httpx.post(url + "/v1/completions", headers=headers, timeout=120,
                     json={"prompt": "x", "max_tokens": 4, "model": "no-such-model"})
    assert ok.status_code == 200 and bad.status_code == 404
    usage = admin.get(f"/api/v1/keys/{created['id']}/usage").json()
    tokens = ok.json()["usage"]
    assert usage["requests"] == 2 and usage["errors"] == 1
    assert usage["prompt_tokens"] == tokens["prompt_tokens"]
    assert usage["completion_tokens"] == tokens["completion_tokens"] == 4
    assert usage["total_tokens"] == tokens["total_tokens"]
    assert abs(usage["last_used_at"] - time.time()) < 120
    label = f'key_id="{created["id"]}"'
    for _ in range(100):
        text = admin.get("/api/v1/metrics").text
        lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                 if label in line and not line.startswith("#")}
        if lines.get(f"aicore_key_requests_total{{{label}}}") == 2:
            break
        time.sleep(0.2)
    assert lines[f"aicore_key_requests_total{{{label}}}"] == 2
    assert lines[f"aicore_key_errors_total{{{label}}}"] == 1
    assert lines[f'aicore_key_tokens_total{{{label},kind="completion"}}'] == 4


def test_bootstrap_key_usage_is_visible(admin):
    admin.get("/v1/models")
    boot_id = next(re.finditer(r'key_id="(boot-[0-9a-f]{12})"', admin.get("/api/v1/metrics").text), None)
    for _ in range(50):
        if boot_id:
            break
        time.sleep(0.2)
        boot_id = next(re.finditer(r'key_id="(boot-[0-9a-f]{12})"', admin.get("/api/v1/metrics").text), None)
    usage = admin.get(f"/api/v1/keys/{boot_id.group(1)}/usage")
    assert usage.status_code == 200 and usage.json()["requests"] >= 1


def _cli(url: str, *args: str, admin_key: str = ADMIN_KEY) -> tuple[int, dict]:
    env = {**os.environ, "AICORE_URL": url, "AICORE_ADMIN_KEY": admin_key}
    done = subprocess.run([sys.executable, "-m", "serve_app.keys_cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout or "{}")


def test_cli_create_use_rotate_revoke(url):
    rc, created = _cli(url, "create", "--name", "cli-bot", "--owner", "ops", "--rpm", "10", "--models", MODEL)
    assert rc == 0 and created["key"].startswith("aic-") and created["rate_limit_per_minute"] == 10
    old = {"X-API-Key": created["key"]}
    assert httpx.get(url + "/v1/models", headers=old, timeout=60).status_code == 200
    rc, listed = _cli(url, "list")
    assert rc == 0 and created["id"] in [k["id"] for k in listed["data"]]
    rc, rotated = _cli(url, "rotate", created["id"])
    assert rc == 0 and rotated["id"] == created["id"] and rotated["key"] != created["key"]
    assert httpx.get(url + "/v1/models", headers=old, timeout=60).status_code == 401
    new = {"X-API-Key": rotated["key"]}
    assert httpx.get(url + "/v1/models", headers=new, timeout=60).status_code == 200
    rc, updated = _cli(url, "update", created["id"], "--tpm", "500", "--disable")
    assert rc == 0 and updated["tokens_per_minute"] == 500 and updated["enabled"] is False
    rc, _ = _cli(url, "update", created["id"], "--enable")
    rc, usage = _cli(url, "usage", created["id"])
    assert rc == 0 and usage["requests"] >= 2
    rc, revoked = _cli(url, "revoke", created["id"])
    assert rc == 0 and revoked["revoked_at"]
    assert httpx.get(url + "/v1/models", headers=new, timeout=60).json()["error"]["code"] == "key_revoked"
    rc, refused = _cli(url, "list", admin_key="wrong")
    assert rc == 1 and refused["error"]["type"] == "authentication_error"


def test_every_key_reads_what_it_may_do_and_never_a_secret(url, admin, make_key):
    watcher = make_key(name="self-watcher", scopes=["admin_read"], rate_limit_per_minute=40, daily_token_quota=5000)
    bot = make_key(name="self-bot", scopes=["inference"], models=[MODEL], tokens_per_minute=900)
    token = admin.post("/api/v1/keys/web-tokens", json={"models": [MODEL], "expires_in_s": 60}).json()
    seen = {}
    for name, key in (("watcher", watcher["key"]), ("bot", bot["key"]), ("token", token["key"]), ("boot", ADMIN_KEY)):
        r = httpx.get(url + "/api/v1/keys/self", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert r.status_code == 200, r.text
        assert key not in r.text and "hash" not in r.json() and r.json()["object"] == "api_key.self"
        seen[name] = r.json()
    assert (seen["watcher"]["id"], seen["watcher"]["name"], seen["watcher"]["scopes"]) == (
        watcher["id"], "self-watcher", ["admin_read"])
    assert seen["watcher"]["rate_limit_per_minute"] == 40
    [quota] = seen["watcher"]["quotas"]
    assert (quota["name"], quota["limit"]) == ("tokens-day", 5000) and quota["used"] >= 0
    assert (seen["bot"]["scopes"], seen["bot"]["models"], seen["bot"]["tokens_per_minute"]) == (
        ["inference"], [MODEL], 900)
    assert seen["token"]["web_token"] and seen["token"]["id"] == token["id"] and seen["token"]["minted_by"] is None
    assert seen["boot"]["bootstrap"] and seen["boot"]["name"] == "API_KEYS" and "admin" in seen["boot"]["scopes"]
    r = httpx.get(url + "/api/v1/keys/self", headers={"X-API-Key": "aic-not-a-key-0000000000"}, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
