"""Usage buckets summed in the ingress's memory and written together (USAGE_FLUSH_S): on a real
Redis where scripts/test.sh starts one (AICORE_TEST_REDIS_URL), else on the memory store."""

import asyncio
import os
import time

from serve_app.access.keys import KeyService
from serve_app.access.usage import QuotaClock
from serve_app.access.usage_buffer import UsageBuffer
from serve_app.state.store import MemoryStore, RedisStore

URL = os.environ.get("AICORE_TEST_REDIS_URL")


def _store():
    return RedisStore(URL) if URL else MemoryStore()


def test_buckets_wait_for_the_flush_and_quota_counters_do_not():
    """Quota period counters are written at once for every key: a quota set on a key later counts
    the period so far at its next request, whichever ingress replica served the earlier ones."""
    async def scenario():
        store = _store()
        buffer = UsageBuffer(store, 3600)  # flushed by hand below
        keys = KeyService(store, {"m1"}, buffer=buffer)
        owner = f"key-buf{time.time_ns()}"
        for _ in range(3):
            await keys.record_usage(owner, 200, 10, 5, model="m1", admitted=True)
        now = time.time()
        day = QuotaClock().counter_key(owner, "day", QuotaClock().period("day", now)[0])
        assert await store.hgetall(day) == {"requests": "3", "tokens": "45"}  # at once: admission reads it
        assert (await store.hgetall("aicore:usage:" + owner))["requests"] == "3"  # running totals at once
        assert buffer.pending  # the buckets wait for the flush
        rows = await keys.series("minute", int(now) - 120, int(now) + 60, key_id=owner)  # a read flushes first
        assert sum(r["requests"] for r in rows) == 3 and sum(r["prompt_tokens"] for r in rows) == 30
        assert buffer.pending == {}
    asyncio.run(scenario())


def test_a_failed_flush_keeps_the_sums_for_the_next():
    class Down(MemoryStore):
        down = True

        async def hupdate_many(self, updates):
            if self.down:
                raise ConnectionError("down")
            return await super().hupdate_many(updates)

    async def buffered():
        store = Down()
        buffer = UsageBuffer(store, 3600)
        buffer.add([("aicore:usage:m:60", {"key-x|m1|requests": 1}, {}, 100.0)])
        await buffer.flush()
        buffer.add([("aicore:usage:m:60", {"key-x|m1|requests": 2}, {}, 100.0)])
        assert buffer.pending["aicore:usage:m:60"][0] == {"key-x|m1|requests": 3}
        store.down = False
        await buffer.flush()
        assert await store.hgetall("aicore:usage:m:60") == {"key-x|m1|requests": "3"} and buffer.pending == {}
    asyncio.run(buffered())


def test_the_buffer_writes_by_itself_within_its_interval():
    async def scenario():
        store = MemoryStore()
        buffer = UsageBuffer(store, 0.05)
        buffer.add([("aicore:usage:m:120", {"k|m|requests": 1}, {}, 100.0)])
        while buffer.pending:  # the background flush empties it
            await asyncio.sleep(0.01)
        assert await store.hgetall("aicore:usage:m:120") == {"k|m|requests": "1"}
    asyncio.run(scenario())
