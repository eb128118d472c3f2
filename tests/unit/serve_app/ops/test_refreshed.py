"""A slow read kept off the request path: fresh, stale-while-reading, too old to serve."""

import asyncio

from serve_app.ops import refreshed
from serve_app.ops.refreshed import Refreshed


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_fresh_stale_and_too_old(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(refreshed.time, "monotonic", clock.monotonic)
    reads = []
    release = asyncio.Event()

    async def read():
        reads.append(len(reads) + 1)
        if len(reads) > 1:
            await release.wait()
        return len(reads)

    async def scenario():
        value = Refreshed(read, ttl_s=1, stale_s=5)
        assert await value.get() == 1  # nothing yet: the caller waits for the first read
        clock.now += 0.5
        assert await value.get() == 1 and reads == [1]  # within the TTL: no read
        clock.now += 2
        assert await value.get(stale_ok=True) == 1  # stale: answered at once, one read started behind
        await asyncio.sleep(0)
        assert await value.get(stale_ok=True) == 1 and reads == [1, 2]  # still one read in flight
        waiting = asyncio.ensure_future(value.get())  # a caller that wants what is true now waits
        await asyncio.sleep(0)
        assert not waiting.done()
        release.set()
        assert await waiting == 2 and reads == [1, 2]  # the same read answered it
        assert await value.get() == 2
        clock.now += 10
        assert await value.get(stale_ok=True) == 3  # too old to serve even to the request path
        assert await value.get(fresh=True) == 4
        value.set(99)
        assert await value.get() == 99

    asyncio.run(scenario())


def test_a_failed_background_read_keeps_the_old_value(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(refreshed.time, "monotonic", clock.monotonic)
    calls = []

    async def read():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("GCS unreachable")
        return "first"

    async def scenario():
        value = Refreshed(read, ttl_s=1, stale_s=5)
        assert await value.get() == "first"
        clock.now += 2
        assert await value.get(stale_ok=True) == "first"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert await value.get(stale_ok=True) == "first"  # still stale: tried again
        await asyncio.sleep(0)
        assert len(calls) == 3

    asyncio.run(scenario())
