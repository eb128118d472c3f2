"""A value that is slow to read (the Serve controller, the GCS), kept off the request path.

Read on a request's critical path, a controller read and a GCS lookup cost the ingress CPU
whenever the cached copy was older than its TTL, which at one request a second is every request
(docs/benchmarks.md). A value is fresh within `ttl_s`; a caller that says `stale_ok` (the
request path) gets a copy up to `stale_s` old at once while one read runs behind; older than
that, or for any other caller (listings, health, admin actions: they show what is true now),
the caller waits for a read, so a long-idle ingress never acts on old news.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Generic, Optional, TypeVar

T = TypeVar("T")
STALE_S = 5.0  # an idle unload takes minutes: a state this old is still the one to act on
logger = logging.getLogger("aicore.status")


class Refreshed(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]], ttl_s: float, stale_s: float = STALE_S):
        self._read = read
        self.ttl_s, self.stale_s = ttl_s, stale_s
        self._value: Optional[T] = None
        self._at = float("-inf")
        self._reading: Optional[asyncio.Task] = None

    def set(self, value: T) -> None:
        self._value, self._at = value, time.monotonic()

    async def get(self, fresh: bool = False, stale_ok: bool = False) -> T:
        age = time.monotonic() - self._at
        if not fresh and age < self.ttl_s:
            return self._value
        if stale_ok and not fresh and age < self.stale_s:
            self._start_read()
            return self._value
        return await asyncio.shield(self._start_read())

    def _start_read(self) -> asyncio.Task:
        """One read at a time; its result replaces the value when it lands."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._land())
            self._reading.add_done_callback(_retrieve)  # a failed read nobody awaited is not an error
        return self._reading

    async def _land(self) -> T:
        value = await self._read()
        self.set(value)
        return value


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("background read failed", exc_info=task.exception())
