"""Per-key RPM/TPM limits in Redis, shared by the two ingress replicas, with OpenAI's headers."""

from __future__ import annotations

import asyncio
import re

import math

import httpx
import openai
import pytest

from tests.integration.security.conftest import MODEL

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


async def _burst(url: str, key: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        return await asyncio.gather(*(client.get("/v1/models") for _ in range(n)))


@pytest.mark.parametrize("limit", [1, 7])
def test_n_per_minute_under_50_concurrent_requests_lets_exactly_n_through(url, sec_server, make_key, limit):
    key = make_key(rate_limit_per_minute=limit)
    responses = asyncio.run(_burst(url, key["key"], 50))
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == limit and len(limited) == 50 - limit, [r.status_code for r in responses]
    # each admitted request saw a distinct remaining count: one atomic counter for both replicas
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(limit))
    for r in limited:
        error = r.json()["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-ratelimit-limit-requests"] == str(limit)
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert re.fullmatch(r"\d+s|\d+m\d+s", r.headers["x-ratelimit-reset-requests"])
    for r in responses:
        assert all(h in r.headers for h in RATE_HEADERS)


def test_limits_hold_across_both_ingress_replicas(url, sec_server, make_key):
    """The burst above is served by both replicas (seen in the access log), and still only N pass."""
    key = make_key(rate_limit_per_minute=5)
    responses = asyncio.run(_burst(url, key["key"], 50))
    assert sum(r.status_code == 200 for r in responses) == 5
    ids = {r.headers["x-request-id"] for r in responses}
    pids = set()
    for _ in range(100):
        pids = {m.group(1) for line in sec_server.log().splitlines() if "aicore.access" in line
                and any(i in line for i in ids) for m in [re.search(r"pid=(\d+)", line)] if m}
        if len(pids) >= 2:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert len(pids) == 2, "the burst should have reached both ingress replicas"


def test_tokens_per_minute_count_real_usage(url, make_key):
    """The headers of an answer count its reservation (prompt at 4 characters a token + max_tokens);
    when it ends, its real tokens replace the reservation."""
    key = make_key(tokens_per_minute=1000)
    headers = {"Authorization": f"Bearer {key['key']}"}
    body = {"model": MODEL, "prompt": "Count: one two three", "max_tokens": 12, "ignore_eos": True,
            "temperature": 0}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        first = c.post("/v1/completions", json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - (math.ceil(len(body["prompt"]) / 4) + 12))
        used = first.json()["usage"]["total_tokens"]
        assert used == first.json()["usage"]["prompt_tokens"] + 12
        # a streamed chat counts too (its usage is known only when the stream ends)
        stream = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                  "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        with c.stream("POST", "/v1/chat/completions", json=stream) as r:
            assert r.status_code == 200
            assert r.headers["x-ratelimit-remaining-tokens"] == str(1000 - used - (math.ceil(len("Hi") / 4) + 5))
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        import json

        used += json.loads(events[-2])["usage"]["total_tokens"]
        third = c.get("/v1/models")
        assert third.headers["x-ratelimit-remaining-tokens"] == str(1000 - used)
        assert third.headers["x-ratelimit-limit-tokens"] == "1000"
        assert "x-ratelimit-limit-requests" not in third.headers  # no request limit on this key


def test_over_the_token_limit_is_429_tokens(url, admin, make_key):
    key = make_key(tokens_per_minute=10)
    headers = {"Authorization": f"Bearer {key['key']}"}
    body = {"model": MODEL, "prompt": "Hello there, friend", "max_tokens": 8, "ignore_eos": True}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        first = c.post("/v1/completions", json=body)
        assert first.status_code == 200, first.text  # the window was empty: admitted
        used = first.json()["usage"]["total_tokens"]
        assert used > 10
        second = c.post("/v1/completions", json=body)
        assert second.status_code == 429, second.text
        error = second.json()["error"]
        assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
        assert second.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(second.headers["retry-after"]) >= 1
    usage = admin.get(f"/api/v1/keys/{key['id']}/usage").json()
    assert usage["total_tokens"] == used and usage["requests"] == 2 and usage["errors"] == 1


def test_openai_client_reads_headers_and_gets_rate_limit_error(url, make_key):
    key = make_key(rate_limit_per_minute=2, tokens_per_minute=5000)
    client = openai.OpenAI(base_url=url + "/v1", api_key=key["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
    assert raw.parse().usage.total_tokens > 0
    client.models.list()
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"]


def test_keys_without_limits_are_unlimited_without_defaults(url, make_key):
    """RATE_LIMIT_PER_MINUTE and TOKENS_PER_MINUTE are unset here: no limit, no headers."""
    key = make_key()
    r = httpx.get(url + "/v1/models", headers={"X-API-Key": key["key"]}, timeout=60)
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
