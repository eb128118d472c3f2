"""Every route against every way a key can be refused, over a real serve run with real Redis."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.security.conftest import ADMIN_KEY, EMBEDDER, MODEL, from_address

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
INFERENCE = [
    ("POST", "/api/v1/generate", {"prompt": "hi", "max_tokens": 2, "model": MODEL}),
    ("POST", "/api/v1/chat", {**CHAT, "model": MODEL}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL}", None),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2, "model": MODEL}),
    ("POST", "/v1/chat/completions", {**CHAT, "model": MODEL}),
]
ADMIN = [
    ("GET", "/api/v1/keys", None),
    ("POST", "/api/v1/keys", {"name": "made-by-test"}),
    ("GET", "/api/v1/keys/{id}", None),
    ("PATCH", "/api/v1/keys/{id}", {"owner": "someone"}),
    ("DELETE", "/api/v1/keys/{id}", None),
    ("POST", "/api/v1/keys/{id}/rotate", None),
    ("GET", "/api/v1/keys/{id}/usage", None),
    ("POST", "/api/v1/models/load", {"model": MODEL}),  # loaded already: idempotent
]
METRICS = [("GET", "/api/v1/metrics", None)]
MODEL_LIST = [("GET", "/api/v1/models", None)]  # callers and operators (admin, admin_read: the console)
ALL = INFERENCE + MODEL_LIST + ADMIN + METRICS
MODEL_ROUTES = [r for r in INFERENCE if r[2] is not None or r[1].endswith(MODEL)]
ids = lambda routes: [f"{m} {p}" for m, p, _ in routes]  # noqa: E731


@pytest.fixture(scope="module")
def keys(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as admin:
        def make(**fields):
            r = admin.post("/api/v1/keys", json={"name": "access-test", **fields})
            assert r.status_code == 201, r.text
            return r.json()

        made = {
            "full": make(scopes=["inference", "admin"]),
            "inference": make(scopes=["inference"]),
            "admin_only": make(scopes=["admin"]),
            "metrics_only": make(scopes=["metrics"]),
            "revoked": make(scopes=["inference", "admin"]),
            "disabled": make(scopes=["inference", "admin"], enabled=False),
            "expired": make(scopes=["inference", "admin"], expires_at=int(time.time()) - 5),
            "no_models": make(models=[]),
            "v6_only": make(scopes=["inference", "admin"], ip_allowlist=["2001:db8:1::/48"]),
            "v4_only": make(scopes=["inference", "admin"], ip_allowlist=["127.0.0.2/32"]),
            "target": make(),
        }
        assert admin.delete(f"/api/v1/keys/{made['revoked']['id']}").json()["revoked_at"] is not None
        return made


def _path(path: str, url: str) -> str:
    if "{id}" not in path:
        return path
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as admin:
        return path.replace("{id}", admin.post("/api/v1/keys", json={"name": "target"}).json()["id"])


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-content-type-options"] == "nosniff"
    error = r.json()["error"]
    assert error["message"] and error["request_id"] == r.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


def _call(client: httpx.Client, method: str, path: str, body, key=None, **headers):
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("method,path,body", ALL, ids=ids(ALL))
def test_every_route_refuses_bad_keys(url, keys, method, path, body):
    path = _path(path, url)
    with httpx.Client(base_url=url, timeout=60) as c:
        assert _error(_call(c, method, path, body), 401)["type"] == "authentication_error"
        assert _error(_call(c, method, path, body, key="aic-not-a-real-key"), 401, "invalid_api_key")
        assert _error(_call(c, method, path, body, key=keys["revoked"]["key"]), 401, "key_revoked")
        assert _error(_call(c, method, path, body, key=keys["disabled"]["key"]), 401, "key_disabled")
        assert _error(_call(c, method, path, body, key=keys["expired"]["key"]), 401, "key_expired")


@pytest.mark.parametrize("method,path,body", ALL, ids=ids(ALL))
def test_every_route_refuses_addresses_outside_the_key_allowlist(url, keys, method, path, body):
    path = _path(path, url)
    with httpx.Client(base_url=url, timeout=60) as c:  # from 127.0.0.1, which the v6 key does not allow
        assert _error(_call(c, method, path, body, key=keys["v6_only"]["key"]), 403, "ip_not_allowed")["type"] \
            == "permission_error"
        assert _error(_call(c, method, path, body, key=keys["v4_only"]["key"]), 403, "ip_not_allowed")
        # IPv6 client behind the trusted proxy 127.0.0.1, but outside the key's /48
        r = _call(c, method, path, body, key=keys["v6_only"]["key"], **{"X-Forwarded-For": "2001:db8:2::5"})
        _error(r, 403, "ip_not_allowed")
    with from_address(url, "127.0.0.2") as c:  # untrusted peer: its X-Forwarded-For is ignored
        r = _call(c, method, path, body, key=keys["v6_only"]["key"], **{"X-Forwarded-For": "2001:db8:1::5"})
        _error(r, 403, "ip_not_allowed")


@pytest.mark.parametrize("method,path,body", ALL, ids=ids(ALL))
def test_every_route_accepts_keys_from_allowed_addresses(url, keys, method, path, body):
    with httpx.Client(base_url=url, timeout=120) as c:
        r = _call(c, method, _path(path, url), body, key=keys["v6_only"]["key"], **{"X-Forwarded-For": "2001:db8:1::5"})
        assert r.status_code in (200, 201), r.text
        r = _call(c, method, _path(path, url), body, key=keys["full"]["key"])
        assert r.status_code in (200, 201), r.text
        assert r.headers["x-content-type-options"] == "nosniff"
    with from_address(url, "127.0.0.2") as c:
        r = _call(c, method, _path(path, url), body, key=keys["v4_only"]["key"])
        assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("method,path,body", ALL, ids=ids(ALL))
def test_global_allowlist_applies_to_every_route(url, keys, method, path, body):
    path = _path(path, url)
    with httpx.Client(base_url=url, timeout=60) as c:
        r = _call(c, method, path, body, key=ADMIN_KEY, **{"X-Forwarded-For": "192.0.2.7"})
        _error(r, 403, "ip_not_allowed")
        r = _call(c, method, path, body, key=ADMIN_KEY, **{"X-Forwarded-For": "2001:db9::1"})
        _error(r, 403, "ip_not_allowed")


def test_global_allowlist_covers_health(url):
    r = httpx.get(url + "/api/v1/health", headers={"X-Forwarded-For": "192.0.2.7"}, timeout=60)
    _error(r, 403, "ip_not_allowed")
    assert httpx.get(url + "/api/v1/health", headers={"X-Forwarded-For": "10.1.2.3"}, timeout=60).status_code == 200


@pytest.mark.parametrize("method,path,body", INFERENCE, ids=ids(INFERENCE))
def test_inference_routes_need_the_inference_scope(url, keys, method, path, body):
    with httpx.Client(base_url=url, timeout=60) as c:
        error = _error(_call(c, method, path, body, key=keys["admin_only"]["key"]), 403, "insufficient_scope")
        assert error["type"] == "permission_error" and "inference" in error["message"]


@pytest.mark.parametrize("method,path,body", ADMIN, ids=ids(ADMIN))
def test_admin_routes_need_the_admin_scope(url, keys, method, path, body):
    with httpx.Client(base_url=url, timeout=60) as c:
        error = _error(_call(c, method, _path(path, url), body, key=keys["inference"]["key"]), 403,
                       "insufficient_scope")
        assert "admin" in error["message"]


def test_metrics_need_the_metrics_or_admin_scope(url, keys):
    for name in ("metrics_only", "admin_only"):
        r = httpx.get(url + "/api/v1/metrics", headers={"X-API-Key": keys[name]["key"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert "aicore_model_state" in r.text
    # the text names every key id and its usage: an inference key may not read it
    with httpx.Client(base_url=url, timeout=60) as c:
        error = _error(_call(c, "GET", "/api/v1/metrics", None, key=keys["inference"]["key"]), 403,
                       "insufficient_scope")
        assert "metrics" in error["message"] and "admin" in error["message"]


def test_the_model_list_is_for_callers_and_operators_only(url, keys):
    for name in ("inference", "admin_only"):
        r = httpx.get(url + "/api/v1/models", headers={"X-API-Key": keys[name]["key"]}, timeout=60)
        assert r.status_code == 200 and MODEL in r.text, (name, r.text)


@pytest.mark.parametrize("method,path,body", INFERENCE + MODEL_LIST + ADMIN, ids=ids(INFERENCE + MODEL_LIST + ADMIN))
def test_a_metrics_key_reads_only_metrics(url, keys, method, path, body):
    with httpx.Client(base_url=url, timeout=60) as c:
        _error(_call(c, method, _path(path, url), body, key=keys["metrics_only"]["key"]), 403, "insufficient_scope")


GHOST = "ghost-model-7b"  # exists nowhere
EMBED_ROUTES = [("POST", "/v1/embeddings", {"input": "hi", "model": EMBEDDER}),
                ("POST", "/api/v1/embeddings", {"input": "hi", "model": EMBEDDER})]
NAMING_ROUTES = MODEL_ROUTES + EMBED_ROUTES


def _naming(c: httpx.Client, method: str, path: str, body, key: str, model: str) -> httpx.Response:
    """The route asked for `model` (in the body, or the model card's path)."""
    if body is None:
        return _call(c, method, path.replace(MODEL, model), None, key=key)
    return _call(c, method, path, {**body, "model": model}, key=key)


def _masked(error: dict, name: str) -> dict:
    return {**error, "message": error["message"].replace(name, "<model>"), "request_id": None}


@pytest.mark.parametrize("method,path,body", NAMING_ROUTES, ids=ids(NAMING_ROUTES))
def test_a_model_outside_the_keys_list_answers_as_one_that_does_not_exist(url, keys, method, path, body):
    """OpenAI's 404 for both, word for word, so a key cannot enumerate the models: not 403 for an
    existing model and 404 for a missing one, nor a 400 saying an existing model has another task."""
    key = keys["no_models"]["key"]
    with httpx.Client(base_url=url, timeout=60) as c:
        missing = _error(_naming(c, method, path, body, key, GHOST), 404, "model_not_found")
        assert missing["message"] == f"The model `{GHOST}` does not exist or you do not have access to it."
        assert missing["type"] == "invalid_request_error" and missing["param"] == "model"
        for model in (MODEL, EMBEDDER):  # one of this route's task, one of the other
            refused = _error(_naming(c, method, path, body, key, model), 404, "model_not_found")
            assert _masked(refused, model) == _masked(missing, GHOST), (model, refused, missing)
        if body is not None:  # the default model is refused the same way
            body = {k: v for k, v in body.items() if k != "model"}
            default = _error(_call(c, method, path, body, key=key), 404, "model_not_found")
            assert "does not exist or you do not have access to it" in default["message"]


def test_model_listings_show_only_allowed_models(url, keys):
    headers = {"X-API-Key": keys["no_models"]["key"]}
    assert httpx.get(url + "/v1/models", headers=headers, timeout=60).json()["data"] == []
    assert httpx.get(url + "/api/v1/models", headers=headers, timeout=60).json()["models"] == []
    headers = {"X-API-Key": keys["inference"]["key"]}
    assert [m["id"] for m in httpx.get(url + "/v1/models", headers=headers, timeout=60).json()["data"]] == [MODEL, EMBEDDER]


MINT = "/api/v1/keys/web-tokens"


def test_a_tokens_key_mints_web_tokens_within_its_own_models_and_limits_and_nothing_else(url, keys):
    """A public site's backend need not hold an admin key: `tokens` mints web tokens, each within
    the minter's own models, limits and expiry, and may do nothing else."""
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as admin:
        minter = admin.post("/api/v1/keys", json={"name": "site-backend", "scopes": ["tokens"], "models": [MODEL],
                                                  "rate_limit_per_minute": 50, "tokens_per_minute": 8000,
                                                  "expires_in_s": 600}).json()
    with httpx.Client(base_url=url, headers={"X-API-Key": minter["key"]}, timeout=120) as site:
        r = site.post(MINT, json={"models": [MODEL], "rate_limit_per_minute": 10, "tokens_per_minute": 4000,
                                  "expires_in_s": 3600})
        assert r.status_code == 201, r.text
        token = r.json()
        assert token["web_token"] and token["scopes"] == ["inference"] and token["minted_by"] == minter["id"]
        assert token["expires_at"] <= minter["expires_at"]  # never outlives its minter
        answer = httpx.post(url + "/v1/completions", headers={"X-API-Key": token["key"]}, timeout=120,
                            json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
        assert answer.status_code == 200 and token["tokens_per_minute"] == 4000, answer.text
        assert answer.headers["x-ratelimit-limit-tokens"] == "4000"  # the token's own limit, in its headers
        # limits left out: the default, or the minter's own when lower
        defaults = site.post(MINT, json={"models": [MODEL]}).json()
        assert defaults["rate_limit_per_minute"] == 20 and defaults["tokens_per_minute"] == 8000
        # asked above the minter's own: refused, naming the limit
        for field, value in (("tokens_per_minute", 8001), ("rate_limit_per_minute", 51)):
            error = _error(site.post(MINT, json={"models": [MODEL], field: value}), 400)
            assert error["param"] == field and "minting key" in error["message"]
        # a model outside the minter's list: the answer for a model that does not exist
        missing = _error(site.post(MINT, json={"models": [GHOST]}), 400, "model_not_found")
        outside = _error(site.post(MINT, json={"models": [EMBEDDER]}), 400, "model_not_found")
        assert _masked(outside, EMBEDDER) == _masked(missing, GHOST)
        outside = _error(site.post(MINT, json={"models": [MODEL, EMBEDDER], "default_model": MODEL}), 400,
                         "model_not_found")
        assert outside["param"] == "models"
    # and nothing else
    for method, path, body in ALL:
        with httpx.Client(base_url=url, timeout=60) as c:
            _error(_call(c, method, _path(path, url), body, key=minter["key"]), 403, "insufficient_scope")
    with httpx.Client(base_url=url, timeout=60) as c:  # inference and metrics keys may not mint
        for name in ("inference", "metrics_only"):
            _error(_call(c, "POST", MINT, {"models": [MODEL]}, key=keys[name]["key"]), 403, "insufficient_scope")


def test_a_disabled_model_is_not_answered_from_the_cache(url):
    """A cache hit ran no lifecycle check: a disabled model kept answering repeated requests."""
    from serve_app.ops.refreshed import STALE_S

    body = {"model": MODEL, "prompt": "Name a colour.", "max_tokens": 3, "temperature": 0}
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=600) as admin:
        assert admin.post("/v1/completions", json=body).status_code == 200
        assert admin.post("/v1/completions", json=body).headers.get("x-cache") == "HIT"
        off = admin.post("/api/v1/models/unload", json={"model": MODEL, "disable": True})
        assert off.status_code == 200 and off.json()["disabled"] is True, off.text
        try:
            # Each ingress replica reads the model's control record at most STALE_S old on the request path
            # (serve_app/ops/refreshed.py): after that long every replica reads it again.
            time.sleep(STALE_S)
            for _ in range(4):  # whichever replica answers
                _error(admin.post("/v1/completions", json=body), 503, "model_disabled")
        finally:
            assert admin.post("/api/v1/models/load", json={"model": MODEL}).json()["disabled"] is False
            time.sleep(STALE_S)  # every replica sees it enabled again before the tests that follow
        again = admin.post("/v1/completions", json=body)
        assert again.status_code == 200 and again.headers.get("x-cache") == "HIT"
