"""One admission path: every channel x every way a key is refused, over a real serve run.

Channels: /api/v1 chat, /v1 chat completions, /v1 embeddings, batch items, WebSocket messages
(the socket is opened with a good key, the key changes while it is open, the next request is
refused) and Telegram updates (the bot's managed key changes between updates). Each refusal
comes in the channel's own form: an HTTP error, a batch item's error, a WebSocket error
message, a chat message. Then usage and TPM for batch items and WebSocket requests, and the
TPM reservation under 20 concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.security.conftest import ADMIN_KEY, EMBEDDER, MODEL, TELEGRAM_SECRET

BOT_DOWN = "Sorry, this bot is not available right now."  # the bot's key is refused: the operator's log says why
BOT_BUSY = "I am answering too many people right now."
BOT_QUOTA = "I have reached my usage quota."
CONDITIONS = {  # name: (HTTP status, error code, the message a Telegram chat gets)
    "revoked": (401, "key_revoked", BOT_DOWN),
    "expired": (401, "key_expired", BOT_DOWN),
    "disabled": (401, "key_disabled", BOT_DOWN),
    "wrong_scope": (403, "insufficient_scope", BOT_DOWN),
    "model_not_allowed": (404, "model_not_found", BOT_DOWN),  # as for a model that does not exist
    "ip_not_allowed": (403, "ip_not_allowed", BOT_DOWN),
    "over_rpm": (429, "rate_limit_exceeded", BOT_BUSY),
    "over_tpm": (429, "rate_limit_exceeded", BOT_BUSY),
    "over_quota": (429, "quota_exceeded", BOT_QUOTA),  # its daily token quota used up
}
KEY_LEVEL = {"revoked", "expired", "disabled", "wrong_scope", "ip_not_allowed"}  # refused before any body is read
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}


def _headers(key: str) -> dict:
    return {"X-API-Key": key}


def _apply(admin: httpx.Client, url: str, key: dict, condition: str, other_model: str) -> None:
    """Put `key` into `condition` (as an operator or the key's own traffic would)."""
    key_id, patch = key["id"], None
    if condition == "revoked":
        assert admin.delete(f"/api/v1/keys/{key_id}").status_code == 200
    elif condition == "expired":
        patch = {"expires_at": int(time.time()) - 5}
    elif condition == "disabled":
        patch = {"enabled": False}
    elif condition == "wrong_scope":
        patch = {"scopes": ["metrics"]}
    elif condition == "model_not_allowed":
        patch = {"models": [other_model]}
    elif condition == "ip_not_allowed":
        patch = {"ip_allowlist": ["10.0.0.0/8"]}  # the tests call from 127.0.0.1
    elif condition == "over_rpm":
        patch = {"rate_limit_per_minute": 1}
    elif condition == "over_tpm":
        patch = {"tokens_per_minute": 1}
    elif condition == "over_quota":  # tokens spent today first (the bot's key may have spent some already)
        _spend_tokens(url, key)
        patch = {"daily_token_quota": 1}
    if patch is not None:
        r = admin.patch(f"/api/v1/keys/{key_id}", json=patch)
        assert r.status_code == 200, r.text
    if condition == "over_rpm":  # the minute's one request, spent on a listing
        assert httpx.get(url + "/v1/models", headers=_headers(key["key"])).status_code == 200
    if condition == "over_tpm":  # a few tokens spent: the window is past 1
        _spend_tokens(url, key)


def _spend_tokens(url: str, key: dict) -> None:
    """A few tokens spent on an embedding."""
    r = httpx.post(url + "/v1/embeddings", headers=_headers(key["key"]), json={"model": EMBEDDER, "input": "hello"},
                   timeout=120)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > 1, r.text


def _http_error(r: httpx.Response) -> tuple[int, str]:
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.status_code, r.json()["error"]["code"]


def _api_v1(url, key):
    return _http_error(httpx.post(url + "/api/v1/chat", headers=_headers(key), json={**CHAT, "model": MODEL}, timeout=120))


def _openai(url, key):
    return _http_error(httpx.post(url + "/v1/chat/completions", headers=_headers(key), json={**CHAT, "model": MODEL},
                                  timeout=120))


def _embeddings(url, key):
    return _http_error(httpx.post(url + "/v1/embeddings", headers=_headers(key), json={"model": EMBEDDER, "input": "hi"},
                                  timeout=120))


def _batch(url, key):
    """A key-level refusal is the batch call's HTTP error; any other is the item's own error."""
    r = httpx.post(url + "/api/v1/generate/batch", headers=_headers(key), timeout=120,
                   json={"items": [{"id": "a", "prompt": "hi", "max_tokens": 2, "model": MODEL}]})
    if r.status_code != 200:
        return _http_error(r)
    (item,) = r.json()["results"]
    assert item["status"] == "error", item
    return "item", item["error"]["code"]


CHANNELS = {"api_v1": (_api_v1, MODEL, EMBEDDER), "openai": (_openai, MODEL, EMBEDDER),
            "embeddings": (_embeddings, EMBEDDER, MODEL), "batch": (_batch, MODEL, EMBEDDER)}


@pytest.fixture
def admin(url):
    with httpx.Client(base_url=url, headers=_headers(ADMIN_KEY), timeout=60) as client:
        yield client


def _new_key(admin: httpx.Client, **fields) -> dict:
    r = admin.post("/api/v1/keys", json={"name": "channel-matrix", **fields})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("condition", list(CONDITIONS))
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_http_channels_refuse(url, admin, channel, condition):
    call, model, other = CHANNELS[channel]
    key = _new_key(admin)
    _apply(admin, url, key, condition, other)
    status, code, _ = CONDITIONS[condition]
    got = call(url, key["key"])
    expected = (status, code) if channel != "batch" or condition in KEY_LEVEL else ("item", code)
    assert got == expected


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1) + "/api/v1/ws"


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_websocket_refuses_the_next_request_after_the_key_changed(url, admin, condition):
    key = _new_key(admin)
    with connect(_ws_url(url), additional_headers=_headers(key["key"])) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        _apply(admin, url, key, condition, EMBEDDER)
        ws.send(json.dumps({"type": "chat", "id": "after", "model": MODEL, **CHAT}))
        message = json.loads(ws.recv())
    assert message["type"] == "error" and message["id"] == "after", message
    assert message["error"]["code"] == CONDITIONS[condition][1]


def _telegram(url: str, text: str, update_id: int) -> str:
    update = {"update_id": update_id, "message": {"message_id": update_id, "date": 1764200000, "text": text,
                                                  "chat": {"id": 4242, "type": "private"}}}
    r = httpx.post(url + "/api/v1/webhooks/telegram", json=update, timeout=120,
                   headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def test_telegram_commands_answer_within_telegrams_limit(url):
    """A /model with a 4,000-character argument answered 500 (the reply repeated it, past 4096)."""
    texts = ("/model " + "x" * 4000, "/model " + "a\n" * 2000, "/model " + "\U0001F600" * 2000, "/" + "a" * 4000)
    for update_id, text in enumerate(texts, start=870001):
        answer = _telegram(url, text, update_id)  # 200, a sendMessage
        assert 0 < len(answer.encode("utf-16-le")) // 2 <= 4096, (text[:10], len(answer))
        assert not answer.startswith("Sorry"), answer  # answered by the bot, not refused


def test_telegram_updates_are_refused_as_chat_messages(url, admin, telegram_key):
    restore = {"expires_at": int(time.time()) + 3600, "enabled": True, "scopes": ["inference"], "models": None,
               "ip_allowlist": [], "rate_limit_per_minute": 0, "tokens_per_minute": 0, "daily_token_quota": None}
    update_ids = iter(range(880001, 889999))
    assert not _telegram(url, "Say hi", next(update_ids)).startswith("Sorry")  # the bot's key works
    for condition in [c for c in CONDITIONS if c != "revoked"] + ["revoked"]:  # revoking is for good: last
        _apply(admin, url, telegram_key, condition, EMBEDDER)
        answer = _telegram(url, "Say hi", next(update_ids))
        assert answer.startswith(CONDITIONS[condition][2]), (condition, answer)
        if condition != "revoked":
            assert admin.patch(f"/api/v1/keys/{telegram_key['id']}", json=restore).status_code == 200


def _usage(admin: httpx.Client, key: dict) -> dict:
    return admin.get(f"/api/v1/keys/{key['id']}/usage").json()


def _remaining_tokens(url: str, key: dict) -> int:
    r = httpx.get(url + "/v1/models", headers=_headers(key["key"]))
    return int(r.headers["x-ratelimit-remaining-tokens"])


def test_batch_items_are_requests_with_usage_and_tokens(url, admin):
    key = _new_key(admin, tokens_per_minute=100000, rate_limit_per_minute=100)
    items = [{"id": str(i), "prompt": f"Count to {i}", "max_tokens": 3, "model": MODEL} for i in range(3)]
    r = httpx.post(url + "/api/v1/generate/batch", headers=_headers(key["key"]), json={"items": items}, timeout=300)
    assert r.status_code == 200 and r.json()["totals"]["succeeded"] == 3, r.text
    spent = sum(item["result"]["tokens_used"] for item in r.json()["results"])
    usage = _usage(admin, key)
    assert usage["requests"] == 3 and usage["total_tokens"] == spent > 0
    assert _remaining_tokens(url, key) == 100000 - spent  # TPM settled to what the items used


def test_websocket_requests_are_requests_with_usage_and_tokens(url, admin):
    key = _new_key(admin, tokens_per_minute=100000)
    spent = 0
    with connect(_ws_url(url), additional_headers=_headers(key["key"])) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        for i in range(2):
            ws.send(json.dumps({"type": "generate", "id": f"r{i}", "prompt": "Hello", "max_tokens": 3, "model": MODEL}))
            while (message := json.loads(ws.recv()))["type"] != "done":
                assert message["type"] == "token", message
            spent += message["usage"]["total_tokens"]
    usage = _usage(admin, key)
    assert usage["requests"] == 2 and usage["total_tokens"] == spent > 0
    assert _remaining_tokens(url, key) == 100000 - spent


def test_concurrent_requests_never_overshoot_tpm_by_more_than_one_reservation(url, admin):
    prompt = "internationalization " * 6
    max_tokens = 8
    from core.token_bounds import token_bound

    reservation = token_bound([prompt]) + max_tokens
    limit = 3 * reservation + 1
    key = _new_key(admin, tokens_per_minute=limit)

    async def burst():
        async with httpx.AsyncClient(base_url=url, headers=_headers(key["key"]), timeout=300) as client:
            body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            return await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(20)))

    answers = asyncio.run(burst())
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 1, statuses
    assert all(r.json()["error"]["type"] == "tokens" for r in answers if r.status_code == 429)
    usage = _usage(admin, key)
    assert usage["total_tokens"] <= limit + reservation, (usage, limit, reservation)
    assert usage["requests"] == 20 and usage["errors"] == statuses.count(429)
