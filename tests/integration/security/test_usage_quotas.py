"""Quotas and usage over time on a real serve run with Redis and two ingress replicas: a key over
its daily token quota is refused 429 `quota_exceeded` on HTTP and on WebSocket; /api/v1/usage shows
its requests for its model (JSON and CSV); a web token's usage appears under its minter."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
from websockets.sync.client import connect

from tests.integration.security.conftest import MODEL

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3, "temperature": 0}


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1) + "/api/v1/ws"


def _series(admin: httpx.Client, **query) -> list[dict]:
    r = admin.get("/api/v1/usage", params={"step": "minute", "start": int(time.time()) - 300, **query})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["step"] == "minute"
    return body["data"]


def _written(admin: httpx.Client, requests: int, **query) -> list[dict]:
    """The series once it holds `requests` requests: each ingress replica writes its usage buckets
    every USAGE_FLUSH_S (a bounded number of reads; the assertions after it are exact)."""
    rows: list[dict] = []
    for _ in range(300):
        rows = _series(admin, **query)
        if sum(r["requests"] for r in rows) >= requests:
            break
        time.sleep(0.1)
    return rows


def test_a_key_over_its_daily_token_quota_is_refused_on_http_and_websocket(url, admin, make_key):
    key = make_key(models=[MODEL], daily_token_quota=20)
    headers = {"X-API-Key": key["key"]}
    first = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
    assert first.status_code == 200, first.text
    assert first.headers["x-quota-limit-tokens-day"] == "20" and first.headers["x-quota-remaining-tokens-day"] == "20"
    spent = first.json()["usage"]["total_tokens"]
    assert spent > 20  # the chat template alone passes 20 tokens: the request that crosses the quota runs whole

    refused = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("quota", "quota_exceeded", "tokens-day")
    assert f"Daily token quota of key {key['id']} reached: limit 20, used {spent}" in error["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert refused.headers["x-quota-remaining-tokens-day"] == "0"

    with connect(_ws_url(url), additional_headers=headers) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "chat", "id": "q1", **CHAT}))
        message = json.loads(ws.recv())
    assert message["type"] == "error" and message["id"] == "q1", message
    assert message["error"]["code"] == "quota_exceeded"

    usage = admin.get(f"/api/v1/keys/{key['id']}/usage").json()
    (quota,) = usage["quotas"]
    assert (quota["name"], quota["limit"], quota["used"]) == ("tokens-day", 20, spent)
    assert quota["resets_at"] > time.time()

    raised = admin.patch(f"/api/v1/keys/{key['id']}", json={"daily_token_quota": 100000})
    assert raised.status_code == 200 and raised.json()["daily_token_quota"] == 100000
    again = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
    assert again.status_code == 200, again.text


def test_usage_series_shows_a_keys_requests_for_its_model(url, admin, make_key):
    key = make_key(models=[MODEL])
    headers = {"X-API-Key": key["key"]}
    spent = 0
    for _ in range(2):
        r = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
        assert r.status_code == 200, r.text
        spent += r.json()["usage"]["total_tokens"]
    assert httpx.get(url + "/v1/models", headers=headers).status_code == 200  # a request for no model

    rows = _written(admin, 3, key_id=key["id"])
    by_model: dict[str, dict] = {}
    for row in rows:  # the requests may straddle a minute
        assert row["key_id"] == key["id"]
        total = by_model.setdefault(row["model"], dict.fromkeys(("requests", "prompt_tokens", "completion_tokens"), 0))
        for name in total:
            total[name] += row[name]
    assert set(by_model) == {MODEL, "-"}
    assert by_model[MODEL]["requests"] == 2 and by_model["-"]["requests"] == 1
    assert by_model[MODEL]["prompt_tokens"] + by_model[MODEL]["completion_tokens"] == spent
    assert [r["key_id"] for r in _series(admin, key_id=key["id"], model=MODEL)] == [key["id"]] * len(
        [r for r in rows if r["model"] == MODEL])
    assert any(r["key_id"] == key["id"] for r in _series(admin))  # every key's series holds it too

    r = admin.get("/api/v1/usage", params={"key_id": key["id"], "step": "hour", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["time", "key_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens"]
    assert {(line[1], line[2], line[3]) for line in table[1:]} == {(key["id"], MODEL, "2"), (key["id"], "'-", "1")}

    too_many = admin.get("/api/v1/usage", params={"step": "minute", "start": 0, "end": 10 ** 9})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "step", too_many.text
    bad_step = admin.get("/api/v1/usage", params={"step": "week"})
    assert bad_step.status_code == 400, bad_step.text
    not_admin = httpx.get(url + "/api/v1/usage", headers=headers)
    assert not_admin.status_code == 403, not_admin.text


def test_a_web_tokens_usage_and_quota_are_its_minters(url, admin, make_key):
    site = make_key(scopes=["tokens"], models=[MODEL], daily_request_quota=3)  # the minting is one of the three
    with httpx.Client(base_url=url, headers={"X-API-Key": site["key"]}, timeout=120) as minter:
        token = minter.post("/api/v1/keys/web-tokens", json={"models": [MODEL]}).json()
    assert token["minted_by"] == site["id"] and token["daily_request_quota"] is None
    headers = {"X-API-Key": token["key"]}
    for _ in range(2):
        r = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
        assert r.status_code == 200, r.text
    refused = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
    assert refused.status_code == 429 and refused.json()["error"]["param"] == "requests-day", refused.text
    assert f"of key {site['id']} reached" in refused.json()["error"]["message"]

    rows = _written(admin, 3, key_id=site["id"], model=MODEL)
    assert sum(r["requests"] for r in rows) == 3 and sum(r["errors"] for r in rows) == 1
    assert _series(admin, key_id=token["id"]) == []  # thousands of tokens add no series
