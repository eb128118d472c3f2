"""Redis unreachable (STORE_FAILURE_MODE=closed, the default): stored keys 503, bootstrap keys work.

Runs last in this package: it stops this server's private Redis and starts it again afterwards
(empty: keys made by earlier tests are gone).
"""

from __future__ import annotations

import time

import httpx

from tests.integration.security.conftest import ADMIN_KEY, MODEL, RedisServer


def test_redis_down_fails_closed_for_stored_keys_only(url, redis_server: RedisServer, make_key):
    stored = make_key()
    assert httpx.get(url + "/v1/models", headers={"X-API-Key": stored["key"]}, timeout=60).status_code == 200
    redis_server.stop()
    try:
        r = httpx.get(url + "/v1/models", headers={"X-API-Key": stored["key"]}, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable" and r.headers["retry-after"]
        r = httpx.post(url + "/api/v1/keys", headers={"X-API-Key": ADMIN_KEY}, json={"name": "x"}, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert httpx.get(url + "/api/v1/models", headers={"X-API-Key": "aic-unknown"}, timeout=60).status_code == 503
        boot = {"X-API-Key": ADMIN_KEY}
        assert httpx.get(url + "/v1/models", headers=boot, timeout=60).status_code == 200
        r = httpx.post(url + "/v1/completions", headers=boot, timeout=120,
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert httpx.get(url + "/v1/models", timeout=60).status_code == 401  # no key is still no key
    finally:
        redis_server.start()
    again = make_key()
    assert httpx.get(url + "/v1/models", headers={"X-API-Key": again["key"]}, timeout=60).status_code == 200


def test_an_admin_request_refused_while_redis_is_down_reaches_the_audit_log_when_it_is_back(
        url, redis_server: RedisServer, make_key):
    operator = make_key(name="outage-operator", scopes=["admin"])
    address = "10.77.0.9"  # behind the trusted proxy: finds this test's entry
    redis_server.stop()
    try:
        r = httpx.get(url + "/api/v1/keys", headers={"X-API-Key": operator["key"], "X-Forwarded-For": address},
                      timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    finally:
        redis_server.start()
    found = []
    for _ in range(600):  # the ingress replica writes what it kept once Redis answers again (every second)
        r = httpx.get(url + "/api/v1/audit", headers={"X-API-Key": ADMIN_KEY}, timeout=60,
                      params={"action": "admin.refused", "actor_id": "anonymous"})
        found = [e for e in r.json()["data"] if e["client_ip"] == address] if r.status_code == 200 else []
        if found:
            break
        time.sleep(0.1)
    assert [(e["route"], e["status"], e["reason"]) for e in found] == [
        ("GET /api/v1/keys", 503, "store_unavailable")], found
