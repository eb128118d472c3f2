"""Rate-limit windows on both stores: exactly N admitted under concurrency, tokens counted after."""

import asyncio

import pytest

from serve_app.access_errors import RateLimited
from serve_app.ratelimit import Limits, RateLimiter, reset_text
from tests.unit.test_store import store  # noqa: F401  (both stores: memory, and Redis when available)


def run(coro):
    return asyncio.run(coro)


def test_reset_text_matches_openai():
    assert reset_text(0.2) == "1s" and reset_text(59.1) == "1m0s" and reset_text(6) == "6s"
    assert reset_text(360) == "6m0s" and reset_text(61) == "1m1s"


def test_exactly_n_requests_under_concurrency(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 0)
        key = f"unit-{id(limiter)}"
        limits = limiter.limits(5, None)

        async def one():
            try:
                return await limiter.admit(key, limits)
            except RateLimited as error:
                return error

        results = await asyncio.gather(*(one() for _ in range(40)))
        admitted = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert len(admitted) == 5 and len(refused) == 35
        assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == [0, 1, 2, 3, 4]
        assert refused[0].type == "requests" and refused[0].headers["Retry-After"]
    run(scenario())


def test_tokens_admit_until_the_window_reaches_the_limit(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 100)
        key = f"unit-tok-{id(limiter)}"
        limits = limiter.limits(None, None)
        assert limits == Limits(0, 100)
        headers = await limiter.admit(key, limits)
        assert headers["x-ratelimit-remaining-tokens"] == "100" and "x-ratelimit-limit-requests" not in headers
        await limiter.add_tokens(key, limits, 60)
        assert (await limiter.admit(key, limits))["x-ratelimit-remaining-tokens"] == "40"
        await limiter.add_tokens(key, limits, 45)
        with pytest.raises(RateLimited) as caught:
            await limiter.admit(key, limits)
        assert caught.value.type == "tokens" and caught.value.headers["x-ratelimit-remaining-tokens"] == "0"
    run(scenario())


def test_zero_means_unlimited(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 0)
        for _ in range(20):
            assert await limiter.admit("unit-unlimited", limiter.limits(None, 0)) == {}
    run(scenario())
