"""Driving the operator's console (/admin) in the test browser: log in, open a screen, fill a
form, read the usage and audit screens, mint and open a console link (test_admin_console_browser.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from scripts.serve_process import ROOT
from tests.integration.browser import Browser

ADMIN_KEY = "console-admin-bootstrap-key"


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
    body = f"document.getElementById('{name}-body')"  # usage and audit: filled once their call answered
    if name in ("usage", "audit"):
        browser.js(f"{body}.replaceChildren(); true")
    browser.js(f"document.querySelector('#tabs button[data-screen={name}]').click(); true")
    wait_for(browser, f"!document.getElementById('screen-{name}').hidden", f"{name} screen shown")
    if name in ("usage", "audit"):
        wait_for(browser, f"{body}.childElementCount > 0", f"{name} screen filled")


def fill_and_submit(browser: Browser, form: str, values: dict[str, str]) -> None:
    """Set the inputs by id and submit the form `form` (its submit handler calls the API)."""
    sets = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in values.items())
    browser.js(f"{sets} document.getElementById({json.dumps(form)}).requestSubmit(); true")


def show_usage(browser: Browser, key_id: str = "", model: str = "") -> None:
    """Filter the usage screen (already shown and filled) and wait for its new answer."""
    browser.js("document.getElementById('usage-body').replaceChildren(); true")
    fill_and_submit(browser, "usage-form", {"usage-key": key_id, "usage-model": model})
    wait_for(browser, "document.getElementById('usage-body').childElementCount > 0", "the usage screen filled")


def usage_totals(admin: httpx.Client, key_id: str) -> dict[str, int]:
    """The key's requests, errors and tokens over the last hour, per minute, from GET /api/v1/usage."""
    end = int(time.time()) + 1
    rows = admin.get("/api/v1/usage", params={"key_id": key_id, "start": end - 3600, "end": end,
                                              "step": "minute"}).json()["data"]
    assert all(row["key_id"] == key_id for row in rows)
    return {field: sum(row[field] for row in rows)
            for field in ("requests", "errors", "prompt_tokens", "completion_tokens")}


def page_usage_row(browser: Browser, key_id: str):
    """The usage screen's row for the key, as {requests, errors, prompt, completion, tokens}, or None."""
    return browser.js(f"""(() => {{
        const row = document.querySelector('#usage-keys tr[data-key={json.dumps(key_id)}]');
        if (!row) return null;
        const n = (c) => Number(row.querySelector('td.' + c).textContent.replace(/,/g, ''));
        return {{requests: n('requests'), errors: n('errors'), prompt: n('prompt'), completion: n('completion'),
                 tokens: n('tokens')}};
    }})()""")


def audit_rows(browser: Browser) -> list[dict]:
    return browser.js("""[...document.querySelectorAll('#audit-table tbody tr')].map((tr) => ({
        id: tr.dataset.entry, action: tr.querySelector('td.action').textContent,
        target: tr.querySelector('td.target').textContent, outcome: tr.querySelector('td.outcome').textContent,
        changes: tr.querySelector('td.changes').textContent}))""")


def show_audit(browser: Browser, **filters: str) -> list[dict]:
    """Filter the audit screen (actor, action, target) and the rows it then shows."""
    browser.js("document.getElementById('audit-body').replaceChildren(); true")
    fill_and_submit(browser, "audit-form", {"audit-actor": filters.get("actor", ""),
                                            "audit-action": filters.get("action", ""),
                                            "audit-target": filters.get("target", "")})
    wait_for(browser, "document.getElementById('audit-body').childElementCount > 0", "the audit screen filled")
    return audit_rows(browser)


def mint_link(url: str, *flags: str) -> tuple[str, str, str]:
    """`keys_cli console-link`: the link, its key and the key's id (printed on stderr)."""
    env = {**os.environ, "AICORE_URL": url, "AICORE_ADMIN_KEY": ADMIN_KEY, "PYTHONPATH": str(ROOT)}
    minted = subprocess.run([sys.executable, "-m", "serve_app.keys_cli", "console-link", "--ttl", "600", *flags],
                            env=env, capture_output=True, text=True, check=True)
    link = minted.stdout.strip()
    assert link.startswith(url + "/admin#token=aic-"), minted.stdout
    key_id = minted.stderr.split()[1]
    assert key_id.startswith("key-"), minted.stderr
    return link, link.split("#token=", 1)[1], key_id


def open_link(browser: Browser, url: str, link: str, token: str) -> None:
    browser.call("Page.navigate", url=link)
    wait_for(browser, "location.pathname === '/admin' && document.getElementById('tabs')?.hidden === false",
             "logged in by the link")
    assert browser.js("location.href") == url + "/admin"  # the fragment is gone from the address bar
    assert browser.js("location.hash") == ""
    assert browser.js("sessionStorage.getItem('aicore.admin_key')") == token


def key_row(key_id: str) -> str:
    return f"document.querySelector('#keys-table tr[data-id={json.dumps(key_id)}]')"
