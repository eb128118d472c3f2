"""One admission lifecycle: every channel that is not an HTTP response runs its work inside
`Admission.settling()`, which settles once with the status taken from how the work ended, and
counts the key's in-flight requests from admission to settling; an HTTP response's admissions
settle through `Outcome.settle`. Each admission records its own usage: a synchronous batch's
items are admitted one by one with the key looked up again, the call itself is no request."""

import asyncio

import pytest

from core.errors import ModelUnavailable, RateLimited, RequestCancelled
from core.settings import Settings
from core.types import GenerationResult, Usage
from deployments.config import load_models_file
from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.batch.service import BatchService
from serve_app.generation import Generation
from serve_app.model_router import ModelEntry
from serve_app.pipeline import Outcome, Pipeline, RequestContext, status_of
from serve_app.protocol.batch import BatchRequest
from serve_app.protocol.keys import KeyCreate
from serve_app.state.store import MemoryStore
from tests import ROOT
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
    assert status_of(asyncio.CancelledError()) == RequestCancelled.status == 499


def test_an_http_requests_admissions_settle_with_how_it_ended():
    on = pipeline()

    async def scenario():
        outcome = Outcome()
        answered = admission(on=on)
        outcome.admissions.append(answered)
        await outcome.settle(status=404)  # the response's own status, as its last byte leaves
        await outcome.settle(asyncio.CancelledError())  # settled once: a later ending changes nothing
        left = Outcome()
        left.admissions.append(admission(on=on))
        await left.settle(asyncio.CancelledError())  # the response never ended: the client left
    asyncio.run(scenario())
    usage = _usage(on)
    assert usage["requests"] == 2 and usage["errors"] == 2
    assert status_of() == 200 and status_of(ModelUnavailable("gone")) == 503 and status_of(ValueError()) == 500


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


class _RevokesAfterFirst:
    """GenerationService stand-in: answers each item; the key is revoked as the first one ends."""

    def __init__(self, keys: KeyService, key_id: str):
        config = next(iter(load_models_file(ROOT / "models.json").models.values()))
        self.entry, self.keys, self.key_id, self.calls = ModelEntry("m", config, None), keys, key_id, 0

    async def start(self, admission, model, request_id, sampling, **kwargs):
        await admission.limit(model)
        self.calls += 1
        if self.calls == 1:
            await self.keys.revoke(self.key_id)
        generation = Generation.replay(self.entry, GenerationResult("hello", "stop", Usage(2, 1)))
        generation.admission = admission  # charged when its stream ends, as GenerationService.start does
        return generation


def test_a_synchronous_batch_admits_each_item_with_the_key_looked_up_again():
    async def scenario():
        store = MemoryStore()
        keys = KeyService(store, {"m"})
        on = Pipeline(Authenticator([], "X-API-Key", keys, store, "closed"), RateLimiter(store, 0, 0), keys)
        created = await keys.create(KeyCreate(name="mail"))
        batch = BatchService(_RevokesAfterFirst(keys, created.id), Settings(batch_concurrency=1), on)
        call = RequestContext("http", created.key, "127.0.0.1")
        await on.check(call, "inference")  # the route's check of the call
        body = BatchRequest(items=[{"id": "a", "prompt": "x", "model": "m"}, {"id": "b", "prompt": "y", "model": "m"}])
        reply = await batch.run(body, call)
        assert [r.status for r in reply.results] == ["ok", "error"]
        assert reply.results[1].error["code"] == "key_revoked"  # revoked mid-batch: the next item is refused
        usage = (await keys.usage(created.id, known=True)).model_dump()
        assert usage["requests"] == 1 and usage["total_tokens"] == 3  # the item that ran; the call is no request
        assert call.outcome.prompt_tokens == 2 and call.outcome.completion_tokens == 1  # the call's log line
        assert on.in_flight.counts == {}
    asyncio.run(scenario())
