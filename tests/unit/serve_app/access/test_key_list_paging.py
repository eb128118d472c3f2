"""The key list is paged (`limit`, `after`, `search`) like the batch jobs list; the console page at
/admin is served with its strict headers (in-process app on the memory store; the page itself in a
browser: tests/integration/test_admin_console_browser.py)."""

import asyncio
import os
import re
import time

import httpx
import pytest

from core.errors import KeyNotFound
from serve_app.access.keys import KeyService
from serve_app.protocol.keys import KeyCreate, WebTokenCreate
from serve_app.state.store import MemoryStore, RedisStore
from tests.unit.serve_app.test_web_token_minting import BOOT, _app


def _service_with(names):
    async def make():
        keys = KeyService(MemoryStore(), {"m1"})
        made = [await keys.create(KeyCreate(name=name, owner=f"owner-{i % 2}")) for i, name in enumerate(names)]
        return keys, made
    return asyncio.run(make())


def test_pages_follow_last_id_until_has_more_is_false():
    # keys made in the same second are ordered by id: the order is (created_at, id), the same on every call
    keys, made = _service_with([f"k{i}" for i in range(7)])
    seen, after = [], None
    for _ in range(10):  # bounded: 7 keys in pages of 3 are 3 pages
        page = asyncio.run(keys.page(3, after=after))
        assert len(page.data) <= 3 and page.last_id == page.data[-1].id and page.first_id == page.data[0].id
        seen += [k.id for k in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert sorted(seen) == sorted(k.id for k in made) and len(seen) == len(set(seen)) == 7
    assert [k.id for k in asyncio.run(keys.page(50)).data] == seen  # one order: the order they were made


def test_search_matches_name_owner_id_and_prefix_case_insensitively():
    keys, made = _service_with(["Telegram-Bot", "email-bot", "site"])
    assert sorted(k.name for k in asyncio.run(keys.page(50, search="BOT")).data) == ["Telegram-Bot", "email-bot"]
    assert [k.name for k in asyncio.run(keys.page(50, search="owner-1")).data] == ["email-bot"]
    assert [k.id for k in asyncio.run(keys.page(50, search=made[2].id)).data] == [made[2].id]
    assert made[2].id in [k.id for k in asyncio.run(keys.page(50, search=made[2].key_prefix)).data]
    empty = asyncio.run(keys.page(50, search="nothing-like-this"))
    assert empty.data == [] and not empty.has_more and empty.last_id is None
    with pytest.raises(KeyNotFound) as info:
        asyncio.run(keys.page(5, after="key-0000000000000000"))
    assert info.value.param == "after"


def test_the_route_pages_with_a_default_and_a_maximum_limit_and_refuses_bad_values():
    app, _ = _app()
    boot = {"X-API-Key": BOOT}

    async def scenario(c):
        # A "." never appears in a key's id (hex) or prefix (URL-safe base64): the search below
        # can match the names only (a plain "n5" matched a random prefix now and then).
        for i in range(52):
            assert (await c.post("/api/v1/keys", headers=boot, json={"name": f"n.{i}"})).status_code == 201
        first = (await c.get("/api/v1/keys", headers=boot)).json()  # no parameters: the first 50
        assert first["object"] == "list" and len(first["data"]) == 50 and first["has_more"] is True
        rest = (await c.get("/api/v1/keys", headers=boot, params={"after": first["last_id"]})).json()
        assert len(rest["data"]) == 2 and rest["has_more"] is False
        names = {k["name"] for k in first["data"] + rest["data"]}
        assert names == {f"n.{i}" for i in range(52)}  # each key on exactly one page
        assert len((await c.get("/api/v1/keys", headers=boot, params={"limit": 200})).json()["data"]) == 52
        found = (await c.get("/api/v1/keys", headers=boot, params={"search": "N.5"})).json()
        assert sorted(k["name"] for k in found["data"]) == ["n.5", "n.50", "n.51"]
        for params, param, status in (({"limit": 201}, "limit", 400), ({"limit": 0}, "limit", 400),
                                      ({"after": "key-missing"}, "after", 404)):
            r = await c.get("/api/v1/keys", headers=boot, params=params)
            assert r.status_code == status, (params, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error" and param in r.text

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await scenario(client)
    asyncio.run(main())


def test_the_console_page_is_served_with_a_strict_policy_and_its_files_exist():
    app, _ = _app()

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            page = await c.get("/admin")
            assert page.status_code == 200 and "<script src=\"/static/admin/admin.js\">" in page.text
            csp = page.headers["content-security-policy"]
            for directive in ("default-src 'self'", "connect-src 'self'", "script-src 'self'", "object-src 'none'",
                              "base-uri 'none'", "frame-ancestors 'none'", "form-action 'none'"):
                assert directive in csp
            assert "unsafe" not in csp and page.headers["x-frame-options"] == "DENY"
            assert "<script>" not in page.text and " style=" not in page.text
            assert not re.search(r"\son[a-z]+\s*=", page.text)  # no inline event handler
            for name in ("admin.js", "keys.js", "screens.js", "admin.css"):
                asset = await c.get(f"/static/admin/{name}")
                assert asset.status_code == 200 and asset.content, name
                assert "innerHTML" not in asset.text and "insertAdjacentHTML" not in asset.text, name
    asyncio.run(main())


class _Counting:
    """A store that counts the reads a listing makes (records, index pages, sets, hashes)."""

    def __init__(self, store):
        self.store, self.reads = store, 0

    def __getattr__(self, name):
        method = getattr(self.store, name)
        if name in ("get", "zafter", "smembers", "zlive", "hgetall", "get_indirect"):
            async def counted(*args, **kwargs):
                self.reads += 1
                return await method(*args, **kwargs)
            return counted
        return method


def _stores():
    yield pytest.param(MemoryStore, id="memory")
    url = os.environ.get("AICORE_TEST_REDIS_URL")
    yield pytest.param(lambda: RedisStore(url), id="redis",
                       marks=pytest.mark.skipif(not url, reason="scripts/test.sh sets AICORE_TEST_REDIS_URL"))


INDEXES = ("aicore:keys", "aicore:keys:order", "aicore:keys:order:ready", "aicore:webtokens", "aicore:webtokens:order")


@pytest.mark.parametrize("make_store", list(_stores()))
def test_a_page_without_search_reads_only_its_own_keys(make_store):
    async def scenario():
        raw = make_store()
        await raw.delete(*INDEXES)
        store = _Counting(raw)
        keys = KeyService(store, {"m1"}, web_token_keep_s=0.2)
        for i in range(120):
            await keys.create(KeyCreate(name=f"k{i}"))
        token = await keys.mint_web_token(WebTokenCreate(models=["m1"], expires_in_s=1))
        for i in range(3):
            await keys.create(KeyCreate(name=f"late{i}"))
        listed = [k.id for k in await keys.list()]  # the order `list` gives: (created_at, id)
        assert len(listed) == 124 and token.id in listed
        await keys.page(1)  # the one-time check that the order indexes hold every key
        store.reads = 0
        page = await keys.page(5, after=listed[60])
        assert [k.id for k in page.data] == listed[61:66] and page.has_more
        assert store.reads <= 1 + 2 + 6  # the cursor's record, the two indexes, six records (one tells has_more)
        everything = await keys.page(200)
        assert [k.id for k in everything.data] == listed and not everything.has_more
        pages, after = [], None
        for _ in range(20):  # bounded: 124 keys in pages of 7
            one = await keys.page(7, after=after)
            pages += [k.id for k in one.data]
            if not one.has_more:
                break
            after = one.last_id
        assert pages == listed
        await asyncio.sleep(1.5)  # the web token's entries expire: it leaves the list and its index
        assert token.id not in [k.id for k in (await keys.page(200)).data]
        assert await raw.zafter("aicore:webtokens:order", None, 5) == []
        await raw.delete(*INDEXES)
    asyncio.run(scenario())


def test_keys_stored_before_the_order_indexes_are_listed_in_order():
    async def scenario():
        store = MemoryStore()
        old = KeyService(store, {"m1"})
        for i in range(4):
            await old.create(KeyCreate(name=f"k{i}"))
        await store.delete("aicore:keys:order", "aicore:keys:order:ready")  # as a store from before them
        fresh = KeyService(store, {"m1"})
        first = await fresh.page(2)
        rest = await fresh.page(2, after=first.last_id)
        listed = [k.id for k in await old.list()]
        assert [k.id for k in first.data + rest.data] == listed and len(listed) == 4 and not rest.has_more
    asyncio.run(scenario())


def test_the_web_token_index_drops_tokens_older_than_any_can_live_and_expires():
    async def scenario():
        store = MemoryStore()
        await store.zadd("aicore:webtokens:order", "old", 100.0)
        now = time.time()
        await store.zadd("aicore:webtokens:order", "new", now, drop_below=now - 10, expire_at=now + 10)
        assert await store.zafter("aicore:webtokens:order", None, 5) == [("new", now)]
        assert 9 < await store.ttl("aicore:webtokens:order") <= 10
    asyncio.run(scenario())
