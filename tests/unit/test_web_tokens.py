"""Web token records on each store: they expire a while after the token does, and stay web tokens."""

import asyncio

import pytest

from core.access_errors import KeyConflict
from serve_app.access.keys import _BY_HASH, _IDS, _RECORD, WEB_TOKEN_KEEP_S, KeyService, hash_key
from serve_app.http.protocol.keys import KeyUpdate, WebTokenCreate
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
