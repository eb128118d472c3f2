"""The operator's console (/admin) in a real headless Chromium against a real server and Redis:
log in, create a key (shown once) and use it with the `openai` package, see its usage (the keys
screen's counters, the usage screen's chart and rows, equal to GET /api/v1/usage), edit and rotate
it, set a daily token quota from the page and see the next request refused (429 quota_exceeded)
and the key's quota bar full, revoke it and see the client refused and the revocation (and the
creation) in the audit screen; the console link's fragment logs in and leaves the address bar, its
`admin` key sees the models, jobs, usage and audit screens and unloads a model; a `--read-only`
link (`admin_read`) sees the screens and no change button from the start (the page asks
GET /api/v1/keys/self at login); a hidden button clicked anyway is refused (403). Values
render as text, never markup."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from scripts.console_screenshots import started_server
from tests.integration.browser import Browser
from tests.integration.console_page import (
    ADMIN_KEY,
    fill_and_submit,
    key_row,
    log_in,
    mint_link,
    open_link,
    open_screen,
    page_usage_row,
    show_audit,
    show_usage,
    usage_totals,
    wait_for,
)

MODEL = "smollm2-135m-instruct"
XSS_NAME = "<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def url():
    with started_server(ADMIN_KEY) as base_url:
        yield base_url


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def admin(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=300) as client:
        yield client


def test_the_page_is_served_with_a_strict_policy(url):
    page = httpx.get(url + "/admin", timeout=60)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
                      "frame-ancestors 'none'", "form-action 'none'"):
        assert directive in csp, csp
    assert "unsafe-inline" not in csp and page.headers["x-frame-options"] == "DENY"


def test_a_key_made_in_the_console_works_shows_its_usage_and_stops_when_revoked(url, browser, admin):
    log_in(browser, url, ADMIN_KEY)
    assert browser.js("sessionStorage.getItem('aicore.admin_key')") == ADMIN_KEY
    assert browser.js("localStorage.length") == 0
    open_screen(browser, "keys")
    browser.js(f"""(() => {{
        const form = document.getElementById('key-form');
        document.getElementById('key-form-box').open = true;
        form.elements.name.value = {json.dumps(XSS_NAME)};
        form.elements.owner.value = 'console-test';
        form.elements.rate_limit_per_minute.value = '100';
        form.requestSubmit();
        return true;
    }})()""")
    secret = wait_for(browser, "!document.getElementById('new-key').hidden && "
                      "document.getElementById('new-key-value').textContent", "new key shown")
    assert secret.startswith("aic-")
    created = next(k for k in admin.get("/api/v1/keys", params={"search": "console-test"}).json()["data"])
    assert created["name"] == XSS_NAME and created["rate_limit_per_minute"] == 100
    # the name is text: no element made from it, no handler run
    wait_for(browser, f"{key_row(created['id'])}", "the new key listed")
    assert browser.js(f"{key_row(created['id'])}.querySelector('td.name').textContent").startswith(XSS_NAME)
    assert browser.js("document.querySelectorAll('#keys-table img').length") == 0
    assert browser.js("window.__pwned === undefined")
    # shown once: closing the box removes it, and no list or later answer holds it
    browser.js("document.getElementById('new-key-close').click(); true")
    assert browser.js("document.getElementById('new-key-value').textContent") == ""
    assert secret not in browser.js("document.body.textContent")

    # the usage screen, filtered to the new key: nothing yet (its creation was the admin's request)
    open_screen(browser, "usage")
    show_usage(browser, created["id"])
    assert browser.js("document.querySelector('#usage-body .usage-none') !== null")
    assert browser.js("document.querySelectorAll('#usage-body svg.chart rect').length") == 0

    client = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=300)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}],
                                           max_tokens=5, temperature=0)
    used = reply.usage.prompt_tokens + reply.usage.completion_tokens
    open_screen(browser, "models")
    open_screen(browser, "keys")  # shown again: counters read afresh
    counted = wait_for(browser, f"""(() => {{
        const row = {key_row(created['id'])};
        return row && Number(row.querySelector('td.requests').textContent) >= 1
            && [row.querySelector('td.requests').textContent, row.querySelector('td.tokens').textContent];
    }})()""", "usage counted")
    assert int(counted[0]) == 1 and int(counted[1].replace(",", "")) == used

    # the usage screen: the chart has bars now, and the key's row says what GET /api/v1/usage says
    for _ in range(600):  # the series is written within USAGE_FLUSH_S of the request: poll the API until it has it
        totals = usage_totals(admin, created["id"])
        if totals["requests"] >= 1:
            break
        time.sleep(0.1)
    assert totals == {"requests": 1, "errors": 0, "prompt_tokens": reply.usage.prompt_tokens,
                      "completion_tokens": reply.usage.completion_tokens}, totals
    open_screen(browser, "usage")
    show_usage(browser, created["id"], MODEL)
    assert page_usage_row(browser, created["id"]) == {
        "requests": totals["requests"], "errors": totals["errors"], "prompt": totals["prompt_tokens"],
        "completion": totals["completion_tokens"], "tokens": used}
    assert browser.js("document.querySelectorAll('#usage-keys tbody tr').length") == 1
    assert browser.js("document.querySelectorAll('#usage-body svg.chart rect').length") >= 2  # both charts moved
    assert browser.js("document.querySelectorAll('#usage-body img').length") == 0

    # edit: the form comes filled with the key's fields; only what changed differs afterwards
    open_screen(browser, "keys")
    wait_for(browser, f"{key_row(created['id'])}", "the key listed again")
    browser.js(f"{key_row(created['id'])}.querySelector('button.edit').click(); true")
    assert browser.js("document.getElementById('key-form').elements.rate_limit_per_minute.value") == "100"
    browser.js("""(() => {
        const form = document.getElementById('key-form');
        form.elements.rate_limit_per_minute.value = '120';
        form.requestSubmit();
        return true;
    })()""")
    wait_for(browser, f"document.getElementById('notice').textContent === 'key {created['id']} saved'", "key saved")
    edited = admin.get(f"/api/v1/keys/{created['id']}").json()
    assert edited["rate_limit_per_minute"] == 120
    assert {k: v for k, v in edited.items() if k != "rate_limit_per_minute"} == \
        {k: v for k, v in created.items() if k != "rate_limit_per_minute"}

    # rotate: a new secret shown once; the old one stops, the new one works
    browser.js("window.__aicoreConfirm = true;"
               f"{key_row(created['id'])}.querySelector('button.rotate').click(); true")
    rotated = wait_for(browser, "!document.getElementById('new-key').hidden && "
                       "document.getElementById('new-key-value').textContent !== "
                       f"{json.dumps(secret)} && document.getElementById('new-key-value').textContent", "rotated")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=2)
    client = openai.OpenAI(base_url=url + "/v1", api_key=rotated, max_retries=0, timeout=300)
    assert client.models.list().data[0].id == MODEL

    # a daily token quota below what the key used today, set from the edit form: the next request is
    # refused (429 quota_exceeded) and the key's tokens-day bar is full
    wait_for(browser, f"{key_row(created['id'])}", "the key listed after the rotation")
    browser.js(f"{key_row(created['id'])}.querySelector('button.edit').click(); true")
    assert browser.js("document.getElementById('key-form').elements.daily_token_quota.value") == ""
    browser.js("""(() => {
        const form = document.getElementById('key-form');
        form.elements.daily_token_quota.value = '1';
        form.requestSubmit();
        return true;
    })()""")
    wait_for(browser, f"document.getElementById('notice').textContent === 'key {created['id']} saved'",
             "quota saved")
    quoted = admin.get(f"/api/v1/keys/{created['id']}").json()
    assert quoted["daily_token_quota"] == 1 and quoted["rate_limit_per_minute"] == 120
    with pytest.raises(openai.RateLimitError) as over:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert over.value.status_code == 429 and over.value.code == "quota_exceeded", over.value.body
    quota = next(q for q in admin.get(f"/api/v1/keys/{created['id']}/usage").json()["quotas"]
                 if q["name"] == "tokens-day")
    assert quota["limit"] == 1 and quota["used"] >= quota["limit"] and quota["used"] == used, quota
    wait_for(browser, f"{key_row(created['id'])}", "the key listed after the quota")
    browser.js(f"{key_row(created['id'])}.querySelector('button.usage').click(); true")
    bar = f"document.querySelector('#key-usage[data-id={json.dumps(created['id'])}] [data-quota=tokens-day]')"
    wait_for(browser, bar, "the quota bar shown")
    shown = browser.js(f"""(() => {{
        const bar = {bar}, track = bar.querySelector('[role=progressbar]'), fill = bar.querySelector('.fill');
        return {{text: bar.querySelector('.quota-text').textContent, full: bar.classList.contains('full'),
                 width: fill.style.width, ratio: fill.getBoundingClientRect().width / track.getBoundingClientRect().width,
                 now: Number(track.getAttribute('aria-valuenow')), max: Number(track.getAttribute('aria-valuemax'))}};
    }})()""")
    assert shown["full"] and shown["width"] == "100%" and abs(shown["ratio"] - 1) < 0.01, shown
    assert shown["now"] == shown["max"] == quota["limit"], shown
    assert shown["text"].startswith(f"tokens-day: {quota['used']:,} of {quota['limit']:,} used (reached"), shown

    browser.js(f"{key_row(created['id'])}.querySelector('button.revoke').click(); true")
    wait_for(browser, f"{key_row(created['id'])} && "
             f"{key_row(created['id'])}.querySelector('td.state').textContent === 'revoked'", "key revoked")
    assert admin.get(f"/api/v1/keys/{created['id']}").json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert refused.value.status_code == 401

    # the audit screen: the revocation and the creation of the key, each filterable by action
    open_screen(browser, "audit")
    revokes = show_audit(browser, action="key.revoke", target=created["id"])
    logged = admin.get("/api/v1/audit", params={"action": "key.revoke", "target": created["id"]}).json()["data"]
    assert [r["id"] for r in revokes] == [e["id"] for e in logged] and len(revokes) == 1, revokes
    assert revokes[0]["action"] == "key.revoke" and revokes[0]["target"] == created["id"]
    assert revokes[0]["outcome"].startswith("ok") and "revoked_at" in revokes[0]["changes"]
    creates = show_audit(browser, action="key.create", target=created["id"])
    assert [(r["action"], r["target"]) for r in creates] == [("key.create", created["id"])], creates
    assert XSS_NAME in creates[0]["changes"]  # the name, as text
    updates = show_audit(browser, action="key.update", target=created["id"])
    assert {r["action"] for r in updates} == {"key.update"} and len(updates) == 2, updates
    assert any("daily_token_quota: null → 1" in r["changes"] for r in updates), updates
    every = show_audit(browser, target=created["id"])
    assert {"key.create", "key.update", "key.rotate", "key.revoke"} <= {r["action"] for r in every}, every
    assert browser.js("document.querySelectorAll('#audit-body img').length") == 0
    assert browser.js("window.__pwned === undefined")


def test_the_console_link_logs_in_lists_jobs_and_unloads_a_model(url, browser, admin):
    job = admin.post("/api/v1/generate/batch/jobs", json={"items": [
        {"id": "a", "prompt": "One, two,", "max_tokens": 4, "temperature": 0, "cache": False}]})
    assert job.status_code == 202, job.text
    link, token, link_id = mint_link(url)
    assert admin.get(f"/api/v1/keys/{link_id}").json()["scopes"] == ["admin"]  # no inference
    open_link(browser, url, link, token)

    open_screen(browser, "jobs")
    row = f"document.querySelector('#jobs-table tr[data-job={json.dumps(job.json()['id'])}]')"
    wait_for(browser, row, "the job listed")
    # submitted by the bootstrap key, listed for the link's own (another admin) key
    assert browser.js(f"{row}.cells[1].textContent") == job.json()["owner"]

    # usage: every key's, the link's own key among them (its console calls are its requests)
    open_screen(browser, "usage")
    show_usage(browser, link_id)
    assert page_usage_row(browser, link_id)["requests"] >= 1
    assert browser.js("document.querySelectorAll('#usage-body svg.chart rect').length") >= 2
    # audit: the link key's creation, by the bootstrap key
    open_screen(browser, "audit")
    created = show_audit(browser, action="key.create", target=link_id)
    assert [(r["action"], r["target"]) for r in created] == [("key.create", link_id)], created

    open_screen(browser, "models")
    model_row = f"document.querySelector('#models-table tr[data-model={json.dumps(MODEL)}]')"
    wait_for(browser, f"{model_row} && {model_row}.querySelector('td.state').textContent.startsWith('ready')",
             "the model shown ready")
    browser.js(f"{model_row}.querySelector('button.unload').click(); true")
    wait_for(browser, f"{model_row} && {model_row}.querySelector('td.state').textContent.startsWith('unloaded')",
             "the model shown unloaded", polls=6000)
    states = {m["name"]: m["state"] for m in admin.get("/api/v1/models").json()["models"]}
    assert states[MODEL] == "unloaded"
    open_screen(browser, "audit")
    unloads = show_audit(browser, action="model.unload", actor=link_id)
    assert [(r["action"], r["target"]) for r in unloads] == [("model.unload", MODEL)], unloads


def test_a_read_only_link_sees_the_screens_and_its_changes_are_refused(url, browser, admin):
    victim = admin.post("/api/v1/keys", json={"name": "read-only-target", "owner": "console-read-only"}).json()
    link, token, link_id = mint_link(url, "--read-only")
    assert admin.get(f"/api/v1/keys/{link_id}").json()["scopes"] == ["admin_read"]
    open_link(browser, url, link, token)
    states = {m["name"]: m["state"] for m in admin.get("/api/v1/models").json()["models"]}

    open_screen(browser, "models")
    model_row = f"document.querySelector('#models-table tr[data-model={json.dumps(MODEL)}]')"
    wait_for(browser, model_row, "the model listed")
    assert browser.js(f"{model_row}.querySelector('td.state').textContent").startswith(states[MODEL])
    open_screen(browser, "jobs")
    wait_for(browser, "document.querySelectorAll('#jobs-table tbody tr').length > 0", "jobs listed")
    open_screen(browser, "usage")
    show_usage(browser, link_id)
    assert page_usage_row(browser, link_id)["requests"] >= 1
    open_screen(browser, "keys")
    fill_and_submit(browser, "keys-search", {"keys-query": "console-read-only"})
    wait_for(browser, key_row(victim["id"]), "the key listed")

    # the page knew the key's scope from GET /api/v1/keys/self at login: no change button was ever shown
    assert browser.js("document.getElementById('who').textContent").endswith("(read only)")
    assert browser.js("document.body.classList.contains('read-only')")
    for change in ("revoke", "edit", "rotate", "toggle"):
        assert browser.js(f"getComputedStyle({key_row(victim['id'])}.querySelector('button.{change}')).display") \
            == "none", change
    assert browser.js("getComputedStyle(document.getElementById('key-form-box')).display") == "none"
    assert browser.js("getComputedStyle(document.getElementById('token-form').closest('details')).display") == "none"
    assert browser.js("[...document.querySelectorAll('button.change')].every(b => b.offsetParent === null)")
    # a hidden button clicked anyway (a tampered page) is refused by the API (403), and said so
    browser.js(f"window.__aicoreConfirm = true; {key_row(victim['id'])}.querySelector('button.revoke').click(); true")
    wait_for(browser, "document.getElementById('notice').textContent.includes('(403')", "the revoke refused")
    assert admin.get(f"/api/v1/keys/{victim['id']}").json()["revoked_at"] is None
    open_screen(browser, "models")
    wait_for(browser, model_row, "the model listed again")
    assert browser.js(f"getComputedStyle({model_row}.querySelector('button.unload')).display") == "none"
    # the refusal is in the audit log, which the read-only key may read
    open_screen(browser, "audit")
    refusals = show_audit(browser, action="admin.refused", actor=link_id)
    assert refusals and {r["action"] for r in refusals} == {"admin.refused"}, refusals
    assert any(f"/api/v1/keys/{victim['id']}" in r["outcome"] for r in refusals), refusals
