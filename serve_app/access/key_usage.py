"""A managed key's usage: running totals, quota periods and usage buckets (KeyService's part that
counts). Stored as serve_app/access/keys.py says; buckets and periods in serve_app/access/usage.py."""

from __future__ import annotations

import time
from typing import Iterable, Optional

from serve_app.access.key_record import StoredKey
from serve_app.access.usage import STEPS, Quota, bucket_key, bucket_starts, bucket_updates, quotas_of, series_rows
from serve_app.protocol.keys import KeyUsage, QuotaUsage

_USAGE = "aicore:usage:"  # hash of counters: requests, errors, prompt_tokens, completion_tokens, last_used_at


class KeyUsageMixin:
    """Needs `store`, `clock` (QuotaClock), `buffer` (UsageBuffer or None) and `_require(key_id)`."""

    async def record_usage(self, key_id: str, status: int, prompt_tokens: int, completion_tokens: int,
                           model: Optional[str] = None, owner: Optional[str] = None, admitted: bool = False) -> None:
        """The key's running totals and, for a request that was `admitted`, the quota periods of
        `owner` (a web token's minter): one round trip. The quota periods are written at once for
        every key, with quotas or not: a quota set later counts the period so far, and the next
        request on any ingress replica reads them. The usage buckets go to the buffer (written
        together, once a second); without one, into the same trip."""
        now = time.time()
        counters = {"requests": 1, "errors": int(status >= 400), "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens}
        counters = {k: v for k, v in counters.items() if v}
        updates = [(_USAGE + key_id, counters, {"last_used_at": str(int(now))}, None)]
        later = bucket_updates(owner or key_id, model, counters, now)
        if admitted:
            periods = self.clock.counter_updates(owner or key_id, prompt_tokens + completion_tokens, now)
            updates.extend(periods)  # admission reads these at once, on any replica: never late
        if self.buffer is None:
            updates += later
        else:
            self.buffer.add(later)
        await self.store.hupdate_many(updates)

    async def usage(self, key_id: str, known: bool = False) -> KeyUsage:
        record = None if known else await self._require(key_id)
        counters = await self.store.hgetall(_USAGE + key_id)
        numbers = {k: int(v) for k, v in counters.items() if k != "last_used_at"}
        last = counters.get("last_used_at")
        return KeyUsage(
            id=key_id, **numbers, total_tokens=numbers.get("prompt_tokens", 0) + numbers.get("completion_tokens", 0),
            last_used_at=int(last) if last else None, quotas=await self._quota_usage(record),
        )

    async def _quota_usage(self, record: Optional[StoredKey]) -> list[QuotaUsage]:
        """Each quota of the key (a web token: its minter's) with what its period used so far."""
        if record is None:
            return []
        if self.buffer is not None:  # this replica's latest sums first
            await self.buffer.flush()
        owner = record.minted_by or record.id
        quotas = quotas_of(record.minter_quotas or {}) if record.web_token else quotas_of(record)
        return await self.quota_usage(owner, quotas)

    async def quota_usage(self, owner: str, quotas: Iterable[Quota]) -> list[QuotaUsage]:
        """Each of `quotas`, counted under `owner`, with what its current period used so far."""
        states = self.clock.states(owner, quotas, time.time())
        counts = await self.store.hgetall_many([state.check[0] for state in states])
        return [QuotaUsage(name=s.quota.name, limit=s.quota.limit, used=int(c.get(s.quota.counter, 0)),
                           resets_at=int(s.resets_at)) for s, c in zip(states, counts)]

    async def series(self, step: str, start: int, end: int, key_id: Optional[str] = None,
                     model: Optional[str] = None) -> list[dict]:
        """Usage rows of [start, end) in `step` buckets: one key's (a web token's: its minter's) or all."""
        starts = bucket_starts(STEPS[step], start, end)
        if self.buffer is not None:  # this replica's latest sums first
            await self.buffer.flush()
        hashes = await self.store.hgetall_many([bucket_key(STEPS[step], s) for s in starts])
        return series_rows(starts, hashes, key_id, model)
