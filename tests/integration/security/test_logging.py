"""The access log: resolved client address, never a key, prompts only escaped and truncated."""

from __future__ import annotations

import time

import httpx

from tests.integration.security.conftest import ADMIN_KEY, MODEL


def _lines_with(server, marker: str, want: int = 1, also: str = "aicore.access") -> list[str]:
    """Log lines holding `marker` and `also` (Ray's own line for a request may arrive before ours)."""
    lines: list[str] = []
    for _ in range(100):
        lines = [line for line in server.log().splitlines() if marker in line and also in line]
        if len(lines) >= want:
            break
        time.sleep(0.2)
    return lines


def test_a_prompt_with_newlines_cannot_add_a_log_line(url, sec_server, make_key):
    key = make_key()
    forged = "hello\n2026-11-27 02:00:00,000 INFO aicore.access: FORGED-LINE key_id=\"admin\"\r\nanother"
    r = httpx.post(url + "/api/v1/generate", headers={"X-API-Key": key["key"]}, timeout=120,
                   json={"prompt": forged, "max_tokens": 3, "model": MODEL})
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    access = [line for line in _lines_with(sec_server, request_id) if "aicore.access" in line]
    assert len(access) == 1
    assert "log_prompt=" in access[0] and "FORGED-LINE" in access[0]  # logged, escaped, on its own line
    for line in sec_server.log().splitlines():
        if "FORGED-LINE" in line:
            assert request_id in line, f"a forged line reached the log: {line!r}"


def test_logged_prompts_are_truncated(url, sec_server):
    marker = "TRUNCATE-ME-" + "q" * 400
    r = httpx.post(url + "/api/v1/generate", headers={"X-API-Key": ADMIN_KEY}, timeout=120,
                   json={"prompt": marker, "max_tokens": 2})
    assert r.status_code == 200, r.text
    [line] = [line for line in _lines_with(sec_server, r.headers["x-request-id"]) if "aicore.access" in line]
    assert "TRUNCATE-ME-" in line and marker not in line


def test_client_ip_is_the_resolved_one(url, sec_server):
    r = httpx.get(url + "/v1/models", timeout=60,
                  headers={"X-API-Key": ADMIN_KEY, "X-Forwarded-For": "203.0.113.9, 2001:db8::77"})
    assert r.status_code == 200
    [line] = [line for line in _lines_with(sec_server, r.headers["x-request-id"]) if "aicore.access" in line]
    assert 'client_ip="2001:db8::77"' in line


def test_captured_log_never_contains_a_key(url, sec_server, admin, make_key):
    key = make_key(scopes=["inference", "admin"])
    rotated = admin.post(f"/api/v1/keys/{key['id']}/rotate").json()
    seen = []
    for secret in (key["key"], rotated["key"], ADMIN_KEY):
        for headers in ({"X-API-Key": secret}, {"Authorization": f"Bearer {secret}"}):
            r = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=120,
                           json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            seen.append(r.headers["x-request-id"])
    assert _lines_with(sec_server, seen[-1])
    log = sec_server.log()
    for secret in (key["key"], rotated["key"], ADMIN_KEY):
        assert secret not in log
    assert key["id"] in log  # the key id is what identifies the caller
