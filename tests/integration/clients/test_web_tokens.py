"""Web tokens: short-lived keys minted for a public web page, over the real app and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from scripts.serve_process import ROOT
from tests.integration.browser import Browser
from tests.integration.clients.conftest import ADMIN_KEY
from tests.integration.conftest import DEFAULT, GEMMA

MINT = "/api/v1/keys/web-tokens"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def _mint(admin: httpx.Client, **fields) -> dict:
    r = admin.post(MINT, json={"models": [DEFAULT], "rate_limit_per_minute": 30, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def _chat(url: str, token: str, model: str = DEFAULT) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model},
                      headers={"Authorization": f"Bearer {token}"}, timeout=120)


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def test_a_minted_token_chats_on_its_models_under_its_limits(url, admin):
    minted = _mint(admin, tokens_per_minute=5000, expires_in_s=600, name="docs-site")
    assert minted["web_token"] is True and minted["scopes"] == ["inference"] and minted["models"] == [DEFAULT]
    assert 590 <= minted["expires_at"] - int(time.time()) <= 600
    r = _chat(url, minted["key"])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-ratelimit-limit-requests"] == "30" and r.headers["x-ratelimit-limit-tokens"] == "5000"
    _error(_chat(url, minted["key"], GEMMA), 404, "model_not_found")  # as if it did not exist
    models = httpx.get(f"{url}/v1/models", headers={"X-API-Key": minted["key"]}, timeout=60).json()
    assert [m["id"] for m in models["data"]] == [DEFAULT]
    listed = {k["id"]: k for k in admin.get("/api/v1/keys", params={"search": minted["id"]}).json()["data"]}
    assert listed[minted["id"]]["web_token"] is True and "key" not in listed[minted["id"]]


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/v1/keys", None),
    ("POST", "/api/v1/keys", {"name": "escalate", "scopes": ["admin"]}),
    ("POST", MINT, {"models": [DEFAULT]}),
    ("POST", "/api/v1/models/load", {"model": DEFAULT}),
    ("GET", "/api/v1/metrics", None),
])
def test_a_token_cannot_call_admin_routes(url, admin, method, path, body):
    token = _mint(admin)["key"]
    r = httpx.request(method, url + path, json=body, headers={"X-API-Key": token}, timeout=60)
    _error(r, 403, "insufficient_scope")


def test_a_token_stops_working_when_it_expires(url, admin):
    minted = _mint(admin, expires_in_s=2, rate_limit_per_minute=100000)
    for _ in range(300):  # bounded polling (a cheap route): the token lives 2 s
        r = httpx.get(f"{url}/v1/models", headers={"X-API-Key": minted["key"]}, timeout=60)
        if r.status_code != 200:
            break
        time.sleep(0.1)
    _error(r, 401, "key_expired")
    _error(_chat(url, minted["key"]), 401, "key_expired")
    # an expiry set in the past ends it at once
    other = _mint(admin)
    assert _chat(url, other["key"]).status_code == 200
    past = admin.patch(f"/api/v1/keys/{other['id']}", json={"expires_at": int(time.time()) - 1})
    assert past.status_code == 200, past.text
    _error(_chat(url, other["key"]), 401, "key_expired")


@pytest.mark.parametrize("fields, param", [
    ({"expires_in_s": 86401}, "expires_in_s"),
    ({"models": []}, "models"),
    ({"models": ["no-such-model"]}, "models"),
    ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    ({"scopes": ["admin"]}, "scopes"),
])
def test_minting_refuses_what_a_web_token_may_not_be(admin, fields, param):
    r = admin.post(MINT, json={"models": [DEFAULT], **fields})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize("patch, param", [
    ({"scopes": ["inference", "admin"]}, "scopes"),
    ({"models": None}, "models"),
    ({"expires_at": None}, "expires_at"),
    ({"expires_at": 4102444800}, "expires_at"),
    ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
])
def test_a_web_token_stays_one_when_updated(admin, patch, param):
    minted = _mint(admin)
    r = admin.patch(f"/api/v1/keys/{minted['id']}", json=patch)  # schema-valid, refused by the key's kind: 409
    assert r.status_code == 409 and r.json()["error"]["param"] == param, r.text


def test_the_command_line_tool_mints_one(url):
    done = subprocess.run([sys.executable, "-m", "serve_app.keys_cli", "--url", url, "--admin-key", ADMIN_KEY,
                           "web-token", "--models", DEFAULT, "--rpm", "5", "--ttl", "120"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    minted = json.loads(done.stdout)
    assert minted["web_token"] and minted["rate_limit_per_minute"] == 5 and minted["key"].startswith("aic-")


def test_the_chat_page_runs_on_a_token_given_in_its_link(url, admin):
    token = _mint(admin, models=[GEMMA])["key"]
    browser = Browser()
    try:
        browser.call("Page.navigate", url=f"{url}/#token={token}")
        for _ in range(600):  # bounded polling: the page loads, connects with the token
            status = browser.js("document.getElementById('status') ? document.getElementById('status').textContent : ''")
            if status == "connected" or status.startswith("error"):
                break
            time.sleep(0.1)
        assert status == "connected"
        assert browser.js("location.hash") == ""  # out of the address bar at once
        assert browser.js("sessionStorage.getItem('aicore.key')") == token
        assert browser.js("[...document.getElementById('model').options].map(o => o.value)") == [GEMMA]
        browser.js("document.getElementById('max-tokens').value = '8';"
                   "document.getElementById('message').value = 'Hello!';"
                   "document.getElementById('send').click(); true")
        for _ in range(1200):
            state = browser.js("(() => { const a = document.querySelectorAll('#log .msg.assistant');"
                               " return a.length ? a[a.length - 1].dataset.state : ''; })()")
            if state in ("done", "error"):
                break
            time.sleep(0.1)
        assert state == "done", browser.js("document.getElementById('log').textContent")
    finally:
        browser.close()
