"""Web token records on each store: they expire a while after the token does, and stay web tokens."""

import asyncio
import time

import pytest

from core.errors import KeyConflict
from serve_app.access.keys import (
    _BY_HASH,
    _IDS,
    _RECORD,
    _USAGE,
    _WEB_TOKENS,
    WEB_TOKEN_KEEP_S,
    KeyService,
    hash_key,
)
from serve_app.protocol.keys import KeyCreate, KeyUpdate, WebTokenCreate
from tests.unit.stores import store_params


@pytest.fixture(params=list(store_params()))
def store(request):
    return request.param()


def test_a_web_tokens_entries_expire_after_it_and_keep_expiring_when_changed(store):
    async def scenario():
        keys = KeyService(store, {"m1"})
        minted = await keys.mint_web_token(WebTokenCreate(models=["m1"], expires_in_s=60))
        assert minted.web_token and minted.scopes == ["inference"] and minted.rate_limit_per_minute == 20
        for name in (_RECORD + minted.id, _BY_HASH + hash_key(minted.key)):
            assert 60 + WEB_TOKEN_KEEP_S - 5 < await store.ttl(name) <= 60 + WEB_TOKEN_KEEP_S
        await keys.update(minted.id, KeyUpdate(name="renamed"))  # a compare-and-set drops an expiry
        assert await store.ttl(_RECORD + minted.id) > WEB_TOKEN_KEEP_S
        rotated = await keys.rotate(minted.id)
        assert await store.ttl(_BY_HASH + hash_key(rotated.key)) > WEB_TOKEN_KEEP_S
        with pytest.raises(KeyConflict, match="inference scope only"):
            await keys.update(minted.id, KeyUpdate(scopes=["inference", "metrics"]))
        await store.delete(_RECORD + minted.id)  # as when its time is up
        assert minted.id not in {k.id for k in await keys.list()}
        assert minted.id not in await store.smembers(_IDS)
    asyncio.run(scenario())


def test_every_entry_of_a_web_token_expires_and_admin_keys_stay(store):
    async def scenario():
        keys = KeyService(store, {"m1"}, web_token_keep_s=30)
        minted = await keys.mint_web_token(WebTokenCreate(models=["m1"], expires_in_s=60))
        await keys.record_usage(minted.id, 200, 5, 7)  # a counter added later keeps the expiry
        for name in (_RECORD + minted.id, _BY_HASH + hash_key(minted.key), _USAGE + minted.id):
            assert 60 + 30 - 5 < await store.ttl(name) <= 60 + 30, name
        assert await store.ttl(_WEB_TOKENS) > 60 + 30 - 5  # at least as long as its newest member
        assert (await keys.usage(minted.id)).total_tokens == 12
        assert minted.id in {k.id for k in await keys.list()}
        assert minted.id not in await store.smembers(_IDS)  # the id set holds admin-made keys only
        made = await keys.create(KeyCreate(name="bot"))
        assert made.id in await store.smembers(_IDS) and await store.ttl(_RECORD + made.id) is None
    asyncio.run(scenario())


def test_the_web_token_index_drops_tokens_whose_time_is_up(store):
    async def scenario():
        await store.zadd_expiring("unit:index", "gone", time.time() - 1)
        await store.zadd_expiring("unit:index", "live", time.time() + 100)
        assert await store.zlive("unit:index") == {"live"}
        assert 95 < await store.ttl("unit:index") <= 100  # the index expires with its last member
        await store.zadd_expiring("unit:index", "earlier", time.time() + 10)
        assert 95 < await store.ttl("unit:index") <= 100  # an earlier member never shortens it
    asyncio.run(scenario())
