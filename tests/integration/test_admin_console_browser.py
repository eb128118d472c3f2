"""The operator's console (/admin) in a real headless Chromium against a real server and Redis:
log in, create a key (shown once) and use it with the `openai` package, see its usage, edit and
rotate it, revoke it and see the client refused; the console link's fragment logs in and leaves the address bar; the
jobs screen lists a job; the models screen unloads a model. Values render as text, never markup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.browser import Browser
from tests.integration.redis_process import RedisProcess

ADMIN_KEY = "console-admin-bootstrap-key"
MODEL = "smollm2-135m-instruct"
XSS_NAME = "<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def url():
    redis_server = RedisProcess().start()
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    models_file = Path(tempfile.mkdtemp(prefix="aicore-console-")) / "models.json"
    models_file.write_text(json.dumps(data))
    server = ServeProcess(env={"API_KEYS": ADMIN_KEY, "REDIS_URL": redis_server.url, "LOG_FORMAT": "text"},
                          args={"model_config_path": str(models_file)})
    try:
        server.start(ready_models=(MODEL,))
        yield server.base_url
    finally:
        server.stop()
        redis_server.stop()


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def admin(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=300) as client:
        yield client


def wait_for(browser: Browser, expression: str, what: str, polls: int = 1200):
    """Poll the page until `expression` is truthy (a bounded number of polls); its value."""
    for _ in range(polls):  # an element found counts as true (CDP returns elements as {} by value)
        value = browser.js(f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()")
        if value:
            return value
        time.sleep(0.05)
    notice = browser.js("document.getElementById('notice').textContent")
    raise AssertionError(f"{what}: never true (the page's notice: {notice!r})")


def log_in(browser: Browser, url: str, key: str) -> None:
    browser.open(url + "/admin")
    assert browser.js("document.getElementById('who').textContent") == "not logged in"
    assert browser.js("getComputedStyle(document.getElementById('tabs')).display") == "none"
    browser.js(f"document.getElementById('admin-key').value = {json.dumps(key)};"
               "document.getElementById('login').requestSubmit(); true")
    wait_for(browser, "!document.getElementById('tabs').hidden", "logged in")
    assert browser.js("getComputedStyle(document.getElementById('login')).display") == "none"


def open_screen(browser: Browser, name: str) -> None:
    browser.js(f"document.querySelector('#tabs button[data-screen={name}]').click(); true")
    wait_for(browser, f"!document.getElementById('screen-{name}').hidden", f"{name} screen shown")


def key_row(key_id: str) -> str:
    return f"document.querySelector('#keys-table tr[data-id={json.dumps(key_id)}]')"


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

    # edit: the form comes filled with the key's fields; only what changed differs afterwards
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

    browser.js(f"{key_row(created['id'])}.querySelector('button.revoke').click(); true")
    wait_for(browser, f"{key_row(created['id'])} && "
             f"{key_row(created['id'])}.querySelector('td.state').textContent === 'revoked'", "key revoked")
    assert admin.get(f"/api/v1/keys/{created['id']}").json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5)
    assert refused.value.status_code == 401


def test_the_console_link_logs_in_lists_jobs_and_unloads_a_model(url, browser, admin):
    job = admin.post("/api/v1/generate/batch/jobs", json={"items": [
        {"id": "a", "prompt": "One, two,", "max_tokens": 4, "temperature": 0, "cache": False}]})
    assert job.status_code == 202, job.text
    env = {**os.environ, "AICORE_URL": url, "AICORE_ADMIN_KEY": ADMIN_KEY, "PYTHONPATH": str(ROOT)}
    minted = subprocess.run([sys.executable, "-m", "serve_app.keys_cli", "console-link", "--ttl", "600"],
                            env=env, capture_output=True, text=True, check=True)
    link = minted.stdout.strip()
    assert link.startswith(url + "/admin#token=aic-"), minted.stdout
    token = link.split("#token=", 1)[1]

    browser.call("Page.navigate", url=link)
    wait_for(browser, "location.pathname === '/admin' && document.getElementById('tabs')?.hidden === false",
             "logged in by the link")
    assert browser.js("location.href") == url + "/admin"  # the fragment is gone from the address bar
    assert browser.js("location.hash") == ""
    assert browser.js("sessionStorage.getItem('aicore.admin_key')") == token

    open_screen(browser, "jobs")
    row = f"document.querySelector('#jobs-table tr[data-job={json.dumps(job.json()['id'])}]')"
    wait_for(browser, row, "the job listed")
    # submitted by the bootstrap key, listed for the link's own (another admin) key
    assert browser.js(f"{row}.cells[1].textContent") == job.json()["owner"]

    # endpoints this server lacks (usage, audit: other parts of the API) are said so, not a crash
    for screen, body in (("usage", "usage-body"), ("audit", "audit-body")):
        open_screen(browser, screen)
        expected = ("usage" if screen == "usage" else "audit log") + ": not available on this server"
        wait_for(browser, f"document.getElementById('{body}').textContent === {json.dumps(expected)}",
                 f"{screen} not available")

    open_screen(browser, "models")
    model_row = f"document.querySelector('#models-table tr[data-model={json.dumps(MODEL)}]')"
    wait_for(browser, f"{model_row} && {model_row}.querySelector('td.state').textContent.startsWith('ready')",
             "the model shown ready")
    browser.js(f"{model_row}.querySelector('button.unload').click(); true")
    wait_for(browser, f"{model_row} && {model_row}.querySelector('td.state').textContent.startsWith('unloaded')",
             "the model shown unloaded", polls=6000)
    states = {m["name"]: m["state"] for m in admin.get("/api/v1/models").json()["models"]}
    assert states[MODEL] == "unloaded"
