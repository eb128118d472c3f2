"""Redis unreachable (STORE_FAILURE_MODE=closed, the default): stored keys 503, bootstrap keys work.

Runs last in this package: it stops this server's private Redis and starts it again afterwards
(empty: keys made by earlier tests are gone).
"""

from __future__ import annotations

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
