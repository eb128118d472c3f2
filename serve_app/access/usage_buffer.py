"""Usage-bucket increments gathered in the ingress replica's memory and written to Redis together.

Each request adds to the minute, hour and day buckets (serve_app/access/usage.py). Writing those at
every request's end cost about a dozen more Redis commands per request (one HINCRBY per counter and
bucket, and the expiry checks). Instead each replica sums them here and writes the sums every
USAGE_FLUSH_S seconds, in one script call (`Store.hupdate_many`), and once more when it stops.
The series then lag by at most that long; a read of the series on this replica writes its own sums
first. A write that fails (Redis down) keeps the sums for the next one. The pending sums are
bounded: a few buckets, each with one field per key, model and counter used within the interval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from serve_app.state.store import HashUpdate, Store

logger = logging.getLogger("aicore.usage")


class UsageBuffer:
    def __init__(self, store: Store, interval_s: float):
        self.store = store
        self.interval_s = interval_s
        self.pending: dict[str, tuple[dict[str, int], Optional[float]]] = {}  # bucket -> (sums, its ttl)
        self._task: Optional[asyncio.Task] = None

    def add(self, updates: list[HashUpdate]) -> None:
        """Add one request's bucket increments (written within `interval_s`)."""
        for key, increments, _, ttl in updates:
            sums, _ = self.pending.setdefault(key, ({}, ttl))
            for field, amount in increments.items():
                sums[field] = sums.get(field, 0) + amount
        if self.pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self.pending:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write every pending sum now, in one store call; on failure keep them for the next."""
        if not self.pending:
            return
        batch, self.pending = self.pending, {}
        try:
            await self.store.hupdate_many([(key, sums, {}, ttl) for key, (sums, ttl) in batch.items()])
        except Exception as error:  # noqa: BLE001 - the store is down: the sums wait for the next flush
            logger.warning("usage buckets not written (%s): kept for the next flush", type(error).__name__)
            for key, (sums, ttl) in batch.items():
                kept, _ = self.pending.setdefault(key, ({}, ttl))
                for field, amount in sums.items():
                    kept[field] = kept.get(field, 0) + amount
