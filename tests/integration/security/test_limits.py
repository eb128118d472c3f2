"""Per-key RPM/TPM limits in Redis, shared by the two ingress replicas, with OpenAI's headers."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest

from core.token_bounds import token_bound
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
    """Bursts of one key are served by both replicas (seen in the access log), and still only N
    pass in all. Ray's proxy may send one quick burst to one replica: up to four bursts are sent
    (well inside the key's one-minute window) until both replicas have answered some."""
    key = make_key(rate_limit_per_minute=5)
    responses: list[httpx.Response] = []
    pids: set[str] = set()
    for _ in range(4):
        responses += asyncio.run(_burst(url, key["key"], 50))
        ids = {r.headers["x-request-id"] for r in responses}
        for _ in range(25):
            pids = {m.group(1) for line in sec_server.log().splitlines() if "aicore.access" in line
                    and any(i in line for i in ids) for m in [re.search(r"pid=(\d+)", line)] if m}
            if len(pids) >= 2:
                break
            asyncio.run(asyncio.sleep(0.2))
        if len(pids) >= 2:
            break
    assert len(pids) == 2, "the bursts should have reached both ingress replicas"
    assert sum(r.status_code == 200 for r in responses) == 5
    assert all(r.status_code in (200, 429) for r in responses)


def test_tokens_per_minute_count_real_usage(url, make_key):
    """The headers of an answer count its reservation (the prompt's token bound + max_tokens);
    when it ends, its real tokens replace the reservation."""
    key = make_key(tokens_per_minute=1000)
    headers = {"Authorization": f"Bearer {key['key']}"}
    body = {"model": MODEL, "prompt": "Count: one two three", "max_tokens": 12, "ignore_eos": True,
            "temperature": 0}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        first = c.post("/v1/completions", json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - (token_bound([body["prompt"]]) + 12))
        used = first.json()["usage"]["total_tokens"]
        assert used == first.json()["usage"]["prompt_tokens"] + 12
        # a streamed chat counts too (its usage is known only when the stream ends)
        stream = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                  "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        with c.stream("POST", "/v1/chat/completions", json=stream) as r:
            assert r.status_code == 200
            assert r.headers["x-ratelimit-remaining-tokens"] == str(1000 - used - (token_bound(["Hi"]) + 5))
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


# Prompts a 4-characters-a-token estimate undercounts: one token per digit or per CJK character.
HOSTILE_PROMPTS = ["7" * 1000, "漢字テスト" * 100, "🙂" * 250, "a1" * 500, " ." * 400]


def test_the_token_bound_never_undercounts_what_the_model_counts(url, make_key):
    key = make_key()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=120) as c:
        for prompt in HOSTILE_PROMPTS:
            for body in ({"prompt": prompt}, {"messages": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": prompt}]}):
                path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
                r = c.post(path, json={"model": MODEL, "max_tokens": 1, **body})
                assert r.status_code == 200, r.text
                texts = [body["prompt"]] if "prompt" in body else [m["content"] for m in body["messages"]]
                counted = r.json()["usage"]["prompt_tokens"]
                assert 0 < counted <= token_bound(texts), (prompt[:10], counted, token_bound(texts))


def test_concurrent_digit_prompts_stay_within_one_request_of_the_token_limit(url, admin, make_key):
    """6 prompts of 1500 digits at once against 3000 tokens a minute: each is ~1500 real tokens,
    which 4 characters a token counted as 375 (all 6 passed: 9006 tokens in the minute)."""
    limit, max_tokens = 3000, 16
    key = make_key(tokens_per_minute=limit)
    body = {"model": MODEL, "prompt": "7" * 1500, "max_tokens": max_tokens, "ignore_eos": True}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=300,
                                     headers={"Authorization": f"Bearer {key['key']}"}) as client:
            return await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(6)))

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {200, 429}, [r.text for r in responses]
    served = [r for r in responses if r.status_code == 200]
    assert served, "the empty window admits the first request"
    used = admin.get(f"/api/v1/keys/{key['id']}/usage").json()["total_tokens"]
    assert used == sum(r.json()["usage"]["total_tokens"] for r in served)
    assert used <= limit + token_bound([body["prompt"]]) + max_tokens, used


def test_a_key_holds_at_most_its_in_flight_cap_of_streams_and_others_are_served(url, make_key):
    """13 long streams of one key at once, against 6 per ingress replica (two): at least one is
    refused with 429 `too_many_in_flight` (13 > 2 x 6), while another key is served meanwhile;
    once they end, the key is served again (nothing stays counted)."""
    from tests.integration.security.conftest import MAX_IN_FLIGHT_PER_KEY

    greedy, other = make_key(), make_key()
    body = {"model": MODEL, "prompt": "Tell a long story.", "max_tokens": 48, "ignore_eos": True, "stream": True}

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            async def stream(key: str) -> tuple[int, str]:
                async with client.stream("POST", "/v1/completions", json=body,
                                         headers={"Authorization": f"Bearer {key}"}) as r:
                    text = (await r.aread()).decode()
                    return r.status_code, text
            burst = [asyncio.create_task(stream(greedy["key"])) for _ in range(2 * MAX_IN_FLIGHT_PER_KEY + 1)]
            await asyncio.sleep(0.5)  # the burst is in (order only: the check below does not depend on it)
            bystander = await client.post("/v1/completions", headers={"Authorization": f"Bearer {other['key']}"},
                                          json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
            results = await asyncio.gather(*burst)
            after = await client.post("/v1/completions", headers={"Authorization": f"Bearer {greedy['key']}"},
                                      json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
            return results, bystander, after

    results, bystander, after = asyncio.run(scenario())
    refused = [text for status, text in results if status == 429]
    assert refused and all('"too_many_in_flight"' in text for text in refused), [s for s, _ in results]
    assert sum(status == 200 for status, _ in results) <= 2 * MAX_IN_FLIGHT_PER_KEY
    assert bystander.status_code == 200, bystander.text
    assert after.status_code == 200, after.text


def test_web_tokens_share_their_minters_budget_and_one_per_address(url, make_key):
    """A fresh token does not reset the limits: tokens one minter gave the same address share the
    token limits there, and all its tokens share the minter's own budget."""
    from tests.integration.security.conftest import from_address

    minter = make_key(scopes=["tokens"], models=[MODEL], rate_limit_per_minute=8, tokens_per_minute=100000)
    with httpx.Client(base_url=url, headers={"X-API-Key": minter["key"]}, timeout=60) as site:
        a, b = (site.post("/api/v1/keys/web-tokens", json={"models": [MODEL], "rate_limit_per_minute": 3}).json()
                for _ in range(2))  # the two mints are 2 of the minter's 8 requests
    assert a["minted_by"] == b["minted_by"] == minter["id"]

    def call(client: httpx.Client, token: dict) -> httpx.Response:
        return client.get("/v1/models", headers={"Authorization": f"Bearer {token['key']}"})

    with httpx.Client(base_url=url, timeout=60) as here, from_address(url, "127.0.0.2") as there:
        assert [call(here, a).status_code for _ in range(3)] == [200, 200, 200]
        assert call(here, a).status_code == 429  # a's own 3 a minute
        fresh = call(here, b)  # a fresh token from the same address: that address's share is spent
        assert fresh.status_code == 429 and "used from this address" in fresh.json()["error"]["message"], fresh.text
        assert call(there, b).status_code == 200  # another address: its own share (minter: 8 of 8)
        pooled = call(there, b)
        assert pooled.status_code == 429, pooled.text
        assert f"the web tokens of key {minter['id']}" in pooled.json()["error"]["message"]
