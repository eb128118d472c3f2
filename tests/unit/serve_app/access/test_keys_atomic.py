"""Key update, rotate and revoke never undo one another, on both stores (Redis: a real server).

A revoke that lands between an update's read and its write used to be overwritten by the
update's stale copy (the key worked again). The store here is the real one, wrapped so that a
second admin's change runs exactly in that gap.
"""

import asyncio
import os

import pytest

from core.errors import KeyConflict
from serve_app.access.keys import KeyService
from serve_app.protocol.keys import KeyCreate, KeyUpdate
from serve_app.state.store import MemoryStore, RedisStore

REDIS_URL = os.environ.get("AICORE_TEST_REDIS_URL")
MODELS = ["m1"]


def _stores():
    yield pytest.param(MemoryStore, id="memory")
    yield pytest.param(
        lambda: RedisStore(REDIS_URL), id="redis",
        marks=pytest.mark.skipif(not REDIS_URL, reason="scripts/test.sh starts Redis and sets AICORE_TEST_REDIS_URL"),
    )


class Interleaved:
    """The real store; the first read of `key` (once armed) lets `meanwhile` run before it returns."""

    def __init__(self, inner):
        self.inner = inner
        self.key = None
        self.meanwhile = None

    def arm(self, key, meanwhile):
        self.key, self.meanwhile = key, meanwhile

    async def get(self, key):
        value = await self.inner.get(key)
        if key == self.key and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return value

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(params=list(_stores()))
def services(request):
    inner = request.param()
    store = Interleaved(inner)
    return KeyService(store, MODELS), KeyService(inner, MODELS), store


def run(coro):
    return asyncio.run(coro)


def test_revoke_during_an_update_stays_revoked(services):
    racing, other, store = services

    async def scenario():
        created = await other.create(KeyCreate(name="k"))
        store.arm("aicore:key:" + created.id, lambda: other.revoke(created.id))
        view = await racing.update(created.id, KeyUpdate(name="renamed"))
        final = await other.get(created.id)
        assert final.revoked_at is not None and final.enabled is False
        assert final.name == "renamed"  # the update is applied on top of the revoke, not instead of it
        assert view == final
        assert (await other.lookup(created.key)).revoked_at is not None
    run(scenario())


def test_rotate_after_a_concurrent_revoke_is_refused(services):
    racing, other, store = services

    async def scenario():
        created = await other.create(KeyCreate(name="k"))
        store.arm("aicore:key:" + created.id, lambda: other.revoke(created.id))
        with pytest.raises(KeyConflict) as refused:
            await racing.rotate(created.id)
        assert refused.value.code == "key_revoked"
        record = await other.lookup(created.key)
        assert record is not None and record.revoked_at is not None  # the old secret: still revoked
        assert len(await other.list()) >= 1 and (await other.get(created.id)).key_prefix == created.key_prefix
    run(scenario())


def test_an_update_during_a_revoke_is_kept_and_the_key_revoked(services):
    racing, other, store = services

    async def scenario():
        created = await other.create(KeyCreate(name="k"))
        store.arm("aicore:key:" + created.id, lambda: other.update(created.id, KeyUpdate(owner="ops")))
        view = await racing.revoke(created.id)
        assert view.revoked_at is not None and view.owner == "ops"
    run(scenario())


def test_rotate_during_an_update_keeps_the_new_secret(services):
    racing, other, store = services

    async def scenario():
        created = await other.create(KeyCreate(name="k"))
        rotated = {}

        async def rotate():
            rotated["key"] = (await other.rotate(created.id)).key

        store.arm("aicore:key:" + created.id, rotate)
        await racing.update(created.id, KeyUpdate(name="renamed"))
        assert await other.lookup(created.key) is None  # the stale copy did not bring back the old hash
        record = await other.lookup(rotated["key"])
        assert record is not None and record.name == "renamed"
    run(scenario())


def test_many_concurrent_updates_and_one_revoke(services):
    _, other, _ = services

    async def scenario():
        created = await other.create(KeyCreate(name="k"))
        changes = [other.update(created.id, KeyUpdate(rate_limit_per_minute=n)) for n in range(1, 16)]
        await asyncio.gather(*changes[:7], other.revoke(created.id), *changes[7:])
        final = await other.get(created.id)
        assert final.revoked_at is not None and final.enabled is False
    run(scenario())
