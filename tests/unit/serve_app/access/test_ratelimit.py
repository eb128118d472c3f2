"""Rate-limit windows on both stores: exactly N admitted under concurrency, tokens reserved at admission."""

import asyncio

import pytest

from core.errors import RateLimited
from serve_app.access.ratelimit import Limits, Pool, RateLimiter, Reservation, reset_text
from tests.unit.serve_app.state.test_store import store  # noqa: F401  (both stores: memory, and Redis when available)


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
        admitted = [r.headers for r in results if isinstance(r, Reservation)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert len(admitted) == 5 and len(refused) == 35
        assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == [0, 1, 2, 3, 4]
        assert refused[0].type == "requests" and refused[0].headers["Retry-After"]
    run(scenario())


def test_tokens_are_reserved_at_admission_and_settled_to_real_use(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 100)
        key = f"unit-tok-{id(limiter)}"
        limits = limiter.limits(None, None)
        assert limits == Limits(0, 100)
        first = await limiter.admit(key, limits, reserve=60)
        assert first.headers["x-ratelimit-remaining-tokens"] == "40" and "x-ratelimit-limit-requests" not in first.headers
        with pytest.raises(RateLimited) as caught:  # 60 reserved + 45 would pass 100
            await limiter.admit(key, limits, reserve=45)
        assert caught.value.type == "tokens" and caught.value.headers["x-ratelimit-remaining-tokens"] == "40"
        await limiter.settle(first, 20)  # it used 20 of its 60
        await limiter.settle(first, 20)  # settling again changes nothing
        second = await limiter.admit(key, limits, reserve=45)
        assert second.headers["x-ratelimit-remaining-tokens"] == "35"
        await limiter.settle(second, 0)  # refused later (overload): the reservation comes back
        assert (await limiter.admit(key, limits, reserve=0)).headers["x-ratelimit-remaining-tokens"] == "80"
    run(scenario())


def test_concurrent_reservations_never_pass_the_token_limit(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 1000)
        key = f"unit-tpm-{id(limiter)}"

        async def one():
            try:
                return await limiter.admit(key, limiter.limits(None, None), reserve=300)
            except RateLimited as error:
                return error

        results = await asyncio.gather(*(one() for _ in range(20)))
        assert sum(isinstance(r, Reservation) for r in results) == 3  # 3 x 300 fit in 1000, a 4th would not
    run(scenario())


def test_a_request_larger_than_the_limit_runs_alone_in_an_empty_window(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 100)
        key = f"unit-big-{id(limiter)}"
        await limiter.admit(key, limiter.limits(None, None), reserve=150)
        with pytest.raises(RateLimited):
            await limiter.admit(key, limiter.limits(None, None), reserve=1)
    run(scenario())


def test_zero_means_unlimited(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 0)
        for _ in range(20):
            assert (await limiter.admit("unit-unlimited", limiter.limits(None, 0), reserve=10)).headers == {}
    run(scenario())


def test_settling_never_makes_a_window_negative(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 100)
        key = f"unit-neg-{id(limiter)}"
        limits = limiter.limits(None, None)
        reservation = await limiter.admit(key, limits, reserve=80)
        await store.delete("aicore:ratelimit:" + key + ":tokens")  # the window ended...
        await limiter.admit(key, limits, reserve=10)  # ...and a new one holds 10
        reservation.window_ends = float("inf")  # even a give-back that still believes in its window
        await limiter.settle(reservation, 0)  # gives back 80 to a window holding 10: clamped at 0
        assert int(await store.get("aicore:ratelimit:" + key + ":tokens")) == 0
        await limiter.admit(key, limits, reserve=60)
        with pytest.raises(RateLimited):  # the limit still holds: 60 + 50 > 100
            await limiter.admit(key, limits, reserve=50)
    run(scenario())


def test_a_request_that_outlived_its_window_gives_nothing_back_to_the_next(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 100)
        key = f"unit-late-{id(limiter)}"
        limits = limiter.limits(None, None)
        old = await limiter.admit(key, limits, reserve=90)
        await store.delete("aicore:ratelimit:" + key + ":tokens")  # its window expired meanwhile
        old.window_ends = 0.0  # as the reservation sees it: its window is over
        await limiter.admit(key, limits, reserve=50)  # the new window's own request
        await limiter.settle(old, 5)  # used 5 of its 90: nothing to give back to this window
        assert int(await store.get("aicore:ratelimit:" + key + ":tokens")) == 50
        await limiter.settle(old, 5)  # settling twice changes nothing
        assert int(await store.get("aicore:ratelimit:" + key + ":tokens")) == 50
    run(scenario())


def test_a_pool_is_shared_all_or_nothing_and_settled_with_the_key(store):  # noqa: F811
    async def scenario():
        limiter = RateLimiter(store, 0, 0)
        tag = f"unit-pool-{id(limiter)}"
        pool = Pool(f"{tag}:minter", Limits(2, 100), "the web tokens of the minter")
        first = await limiter.admit(f"{tag}:t1", Limits(10, 100), reserve=60, pools=(pool,))
        with pytest.raises(RateLimited, match="the web tokens of the minter") as caught:  # another token, same pool
            await limiter.admit(f"{tag}:t2", Limits(10, 100), reserve=60, pools=(pool,))
        assert caught.value.type == "tokens"
        # refused: nothing reserved in t2's own window (all or nothing)
        assert int(await store.get(f"aicore:ratelimit:{tag}:t2:tokens") or 0) == 0
        await limiter.settle(first, 10)  # real use replaces the reservation in both windows
        assert int(await store.get(f"aicore:ratelimit:{tag}:t1:tokens")) == 10
        assert int(await store.get(f"aicore:ratelimit:{tag}:minter:tokens")) == 10
        with pytest.raises(RateLimited) as caught:  # the pool's 2 requests a minute are spent (t2 counted one)
            await limiter.admit(f"{tag}:t3", Limits(10, 100), reserve=5, pools=(pool,))
        assert caught.value.type == "requests"
    run(scenario())
