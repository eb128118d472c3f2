"""Screenshots of each screen of the operator's console (/admin) into docs/images/console-<screen>.png,
taken in headless Chromium over the DevTools protocol (Page.captureScreenshot).

    # against a server you started (AICORE_URL, AICORE_ADMIN_KEY as for keys_cli):
    .venv/bin/python -m scripts.console_screenshots --seed
    # or start one here (Redis and SmolLM2 only), seed it, shoot, stop it:
    .venv/bin/python -m scripts.console_screenshots --start

`--seed` makes demo keys, a few chat requests with one (until a small daily token quota on it is
reached, so its next request is refused with quota_exceeded), revokes another, and submits one
batch job first, so every screen shows real data: the usage chart, a full quota bar (the keys
screen's picture shows the demo key's usage), audit entries (it changes the server: use a test
server).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.browser import Browser
from tests.integration.redis_process import RedisProcess

MODEL = "smollm2-135m-instruct"
START_KEY = "console-screenshots-admin-key"
# What each screen shows once it has loaded (polled a bounded number of times, then shot anyway).
SCREENS = {
    "models": "document.querySelectorAll('#models-table tbody tr').length > 0",
    "keys": "document.querySelectorAll('#keys-table tbody tr').length > 0",
    "usage": "document.querySelectorAll('#usage-body svg.chart rect').length > 0",
    "jobs": "document.querySelectorAll('#jobs-table tbody tr').length > 0",
    "audit": "document.querySelectorAll('#audit-table tbody tr').length > 0",
}
DEMO_KEY = "telegram-bot"
DAILY_TOKEN_QUOTA = 120


def seed(url: str, admin_key: str) -> None:
    """Demo keys; chat requests with one until its daily token quota refuses the next (429
    quota_exceeded); another key revoked; a batch job: each screen then has something to show."""
    with httpx.Client(base_url=url, headers={"X-API-Key": admin_key}, timeout=300) as admin:
        demo = admin.post("/api/v1/keys", json={"name": DEMO_KEY, "owner": "ops@example.com",
                                                "rate_limit_per_minute": 60, "tokens_per_minute": 20000,
                                                "daily_token_quota": DAILY_TOKEN_QUOTA})
        demo.raise_for_status()
        email = admin.post("/api/v1/keys", json={"name": "email-bot", "owner": "ops@example.com",
                                                 "priority": "batch"})
        email.raise_for_status()
        headers = {"Authorization": f"Bearer {demo.json()['key']}"}
        for prompt in ("Say hi.", "Name a colour.", "Count to three.", "Say bye.", "Name a fruit.", "Say yes."):
            chat = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=300,
                              json={"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                                    "max_tokens": 8})
            if chat.status_code == 429:
                break  # the quota reached: this refusal shows as an error in the usage chart
            chat.raise_for_status()
        old = admin.post("/api/v1/keys", json={"name": "old-demo", "owner": "ops@example.com"})
        old.raise_for_status()
        admin.delete(f"/api/v1/keys/{old.json()['id']}").raise_for_status()
        admin.post("/api/v1/generate/batch/jobs", json={"items": [
            {"id": "a", "prompt": "One, two,", "max_tokens": 4}]}).raise_for_status()


def shoot(url: str, admin_key: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    browser = Browser()
    written = []
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)
        browser.open(url + "/admin")
        browser.js(f"document.getElementById('admin-key').value = {json.dumps(admin_key)};"
                   "document.getElementById('login').requestSubmit(); true")
        _poll(browser, "!document.getElementById('tabs').hidden")
        for screen, loaded in SCREENS.items():
            browser.js(f"document.querySelector('#tabs button[data-screen={screen}]').click(); true")
            _poll(browser, loaded)
            if screen == "keys":  # the demo key's usage and quota bars under the list
                browser.js("(() => { const row = [...document.querySelectorAll('#keys-table tbody tr')]"
                           f".find((tr) => tr.querySelector('td.name').textContent === {json.dumps(DEMO_KEY)});"
                           " if (row) row.querySelector('button.usage').click(); return true; })()")
                _poll(browser, "document.querySelector('#key-usage .quota') !== null")
            time.sleep(0.3)  # let the layout settle before the picture
            shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            path = out / f"console-{screen}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            written.append(path)
    finally:
        browser.close()
    return written


def _poll(browser: Browser, expression: str, polls: int = 200) -> bool:
    for _ in range(polls):
        if browser.js(expression):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def started_server(key: str = START_KEY):
    """Redis and a server with SmolLM2 only and `key` as its bootstrap key, stopped on leaving."""
    redis_server = RedisProcess().start()
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    models_file = Path(tempfile.mkdtemp(prefix="aicore-shots-")) / "models.json"
    models_file.write_text(json.dumps(data))
    server = ServeProcess(env={"API_KEYS": key, "REDIS_URL": redis_server.url, "LOG_FORMAT": "text"},
                          args={"model_config_path": str(models_file)})
    try:
        server.start(ready_models=(MODEL,))
        yield server.base_url
    finally:
        server.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AICORE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--admin-key", default=os.environ.get("AICORE_ADMIN_KEY"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--seed", action="store_true", help="make demo keys, requests (one key up to its quota), a revocation and a batch job first")
    parser.add_argument("--start", action="store_true", help="start a server (and Redis) here; implies --seed")
    args = parser.parse_args()
    if args.start:
        with started_server() as url:
            seed(url, START_KEY)
            written = shoot(url, START_KEY, args.out)
    else:
        if not args.admin_key:
            parser.error("an admin key is needed: --admin-key or AICORE_ADMIN_KEY")
        if args.seed:
            seed(args.url, args.admin_key)
        written = shoot(args.url, args.admin_key, args.out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
