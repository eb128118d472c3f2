"""One admission lifecycle: every channel that is not an HTTP response runs its work inside
`Admission.settling()`, which settles once with the status taken from how the work ended, and
counts the key's in-flight requests from admission to settling."""

import asyncio

import pytest

from core.errors import ModelUnavailable, RateLimited
from serve_app.pipeline import CLIENT_GONE, Pipeline
from tests.unit.admissions import ANYONE, admission, pipeline


def _usage(on: Pipeline) -> dict:
    return asyncio.run(on.keys.usage(ANYONE.key_id, known=True)).model_dump()


def test_done_error_and_cancelled_settle_with_their_status():
    on = pipeline(tpm=1000)

    async def scenario():
        async with admission(on=on).settling() as done:  # done: 200
            await done.limit("m", reserve_tokens=100)
            done.charge(3, 4)
        with pytest.raises(ModelUnavailable):
            async with admission(on=on).settling() as failed:
                await failed.limit("m", reserve_tokens=100)
                raise ModelUnavailable("gone")
        started = asyncio.Event()

        async def cancelled_work():
            async with admission(on=on).settling() as left:
                await left.limit("m", reserve_tokens=100)
                started.set()
                await asyncio.sleep(3600)
        task = asyncio.create_task(cancelled_work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return done, failed

    done, failed = asyncio.run(scenario())
    assert done.closed and failed.closed
    usage = _usage(on)
    assert usage["requests"] == 3 and usage["errors"] == 2  # 503 and 499 are both errors
    assert usage["prompt_tokens"] == 3 and usage["completion_tokens"] == 4
    assert on.in_flight.counts == {}  # every request gave its in-flight place back
    assert CLIENT_GONE == 499


def test_the_in_flight_cap_refuses_one_more_and_frees_at_settling():
    on = Pipeline(None, pipeline().limiter, pipeline().keys, max_in_flight_per_key=2)
    managed = ANYONE

    async def scenario():
        first, second, third = (admission(managed, on=on) for _ in range(3))
        await first.limit("m")
        await second.limit("m")
        with pytest.raises(RateLimited) as refused:
            await third.limit("m")
        assert refused.value.code == "too_many_in_flight" and refused.value.status == 429
        await third.close(429)
        await first.close(200)
        again = admission(managed, on=on)
        await again.limit("m")  # a place is free again
        await second.close(200)
        await again.close(200)

    asyncio.run(scenario())
    assert on.in_flight.counts == {}
