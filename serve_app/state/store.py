"""Shared state for the ingress: Redis when REDIS_URL is set, else one process's memory.

A small set of primitives (strings with TTL, atomic windowed counters, hashes, sets) that
both implementations provide with the same meaning, so the cache, sessions, API keys and
rate limits are written once. Every Redis failure becomes `StoreUnavailable` (503), and
each caller decides what a failure means (the cache skips, sessions answer 503).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from core.errors import StoreUnavailable
from serve_app.state.store_contract import (  # noqa: F401 (the contract, re-exported)
    HashUpdate,
    QuotaCheck,
    Store,
    Taken,
    Window,
)
from serve_app.state.store_scripts import (
    COMPARE_AND_SET,
    GET_INDIRECT,
    HUPDATE_MANY,
    INCR_WINDOW,
    SETTLE_WINDOW,
    TAKE_WINDOW,
)
from serve_app.state.store_zsets import MemoryZSets, RedisZSets

PURGE_EVERY_S = 60.0  # how often a MemoryStore drops expired entries that nobody reads again


class RedisStore(RedisZSets):
    kind = "redis"

    def __init__(self, url: str, timeout_s: float = 1.0, on_error: Callable[[], None] = lambda: None,
                 password: Optional[str] = None):
        import redis.asyncio as redis

        self._on_error = on_error
        self._errors = (redis.RedisError, OSError, asyncio.TimeoutError)
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One immediate retry: a pooled connection that died with a Redis restart is replaced
        # transparently instead of failing the first call after the restart.
        # `password` (REDIS_PASSWORD) applies when the URL carries none: redis-py lets the URL's win.
        self.client = redis.Redis.from_url(
            url, password=password or None, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=15, retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self._incr = self.client.register_script(INCR_WINDOW)
        self._cas = self.client.register_script(COMPARE_AND_SET)
        self._take = self.client.register_script(TAKE_WINDOW)
        self._settle = self.client.register_script(SETTLE_WINDOW)
        self._indirect = self.client.register_script(GET_INDIRECT)
        self._hupdate_many = self.client.register_script(HUPDATE_MANY)

    async def _call(self, coro):
        try:
            return await coro
        except self._errors as error:
            self._on_error()
            raise StoreUnavailable(f"Redis is unreachable ({type(error).__name__})") from None

    async def get(self, key):
        return await self._call(self.client.get(key))

    async def set(self, key, value, ttl_s=None):
        await self._call(self.client.set(key, value, ex=int(ttl_s) if ttl_s else None))

    async def compare_and_set(self, key, expected, value):
        """Set `key` to `value` only while it still holds `expected`; True when it was set."""
        return bool(await self._call(self._cas(keys=[key], args=[expected, value])))

    async def delete(self, *keys):
        if keys:
            await self._call(self.client.delete(*keys))

    async def incr_window(self, key, amount, window_s):
        return int(await self._call(self._incr(keys=[key], args=[amount, window_s])))

    async def take_window(self, windows, reserve, window_s, quotas=()):
        keys = [name for requests_key, tokens_key, _, _ in windows for name in (requests_key, tokens_key)]
        keys += [hash_key for hash_key, _, _ in quotas]
        args = [reserve, window_s, len(quotas)] + [limit for _, _, rpm, tpm in windows for limit in (rpm, tpm)]
        args += [part for _, field, limit in quotas for part in (field, limit)]
        answer = [int(value) for value in await self._call(self._take(keys=keys, args=args))]
        end = 2 + 4 * len(windows)
        used = [(answer[i], _seconds(answer[i + 1], window_s), answer[i + 2], _seconds(answer[i + 3], window_s))
                for i in range(2, end, 4)]
        return answer[0], answer[1] - 1, used, answer[end:]

    async def settle_window(self, keys, amount, window_s):
        if amount and keys:
            await self._call(self._settle(keys=list(keys), args=[amount, window_s]))

    async def get_indirect(self, index_key, prefix):
        return await self._call(self._indirect(keys=[index_key], args=[prefix]))

    async def hupdate(self, key, increments, values):
        """HINCRBY each counter and HSET the values in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for field, amount in increments.items():
            pipe.hincrby(key, field, amount)
        if values:
            pipe.hset(key, mapping=values)
        await self._call(pipe.execute())

    async def hupdate_many(self, updates):
        """Every hash's counters, values and first expiry in one round trip (one script)."""
        keys, args = [], []
        for key, increments, values, ttl_s in updates:
            keys.append(key)
            args += [int(ttl_s) if ttl_s else 0, len(increments), len(values)]
            args += [part for item in increments.items() for part in item]
            args += [part for item in values.items() for part in item]
        if keys:
            await self._call(self._hupdate_many(keys=keys, args=args))

    async def hgetall_many(self, keys):
        """Several hashes in one round trip (a usage series: one hash per bucket)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return list(await self._call(pipe.execute())) if keys else []

    async def hset(self, key, mapping):
        await self._call(self.client.hset(key, mapping=mapping))

    async def hgetall(self, key):
        return await self._call(self.client.hgetall(key))

    async def hincrby(self, key, field, amount):
        return int(await self._call(self.client.hincrby(key, field, amount)))

    async def sadd(self, key, member):
        await self._call(self.client.sadd(key, member))

    async def srem(self, key, member):
        await self._call(self.client.srem(key, member))

    async def smembers(self, key):
        return set(await self._call(self.client.smembers(key)))

    async def zadd_expiring(self, key, member, deadline):
        """Index `member` until `deadline` (epoch s): members past theirs are dropped in the same
        round trip, and the index itself expires with its last member (bounded by design)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(key, {member: deadline})
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.execute_command("PEXPIREAT", key, int(deadline * 1000), "GT")  # a later deadline: moved
        pipe.execute_command("PEXPIREAT", key, int(deadline * 1000), "NX")  # a new index: set
        await self._call(pipe.execute())

    async def zlive(self, key):
        return set(await self._call(self.client.zrangebyscore(key, time.time(), "+inf")))

    async def ping(self):
        try:
            return bool(await self.client.ping())
        except self._errors:
            return False

    async def count(self, prefix):
        async def scan() -> int:
            return sum([1 async for _ in self.client.scan_iter(match=prefix + "*", count=500)])

        return await self._call(scan())

    async def ttl(self, key):
        """Seconds until the key expires; None when it has no expiry or does not exist."""
        remaining = int(await self._call(self.client.pttl(key)))
        return remaining / 1000 if remaining >= 0 else None

    async def expire(self, key, ttl_s):
        """Give an existing key (any kind) a time to live; a missing key stays missing."""
        await self._call(self.client.pexpire(key, max(1, int(ttl_s * 1000))))


class MemoryStore(MemoryZSets):
    """The single-replica default: the same semantics in one process (the event loop serialises)."""

    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[str, object] = {}
        self._expiry: dict[str, float] = {}
        self._purged_at = time.monotonic()

    def _live(self, key: str):
        deadline = self._expiry.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        return self._data.get(key)

    def _expire(self, key: str, ttl_s: Optional[float]) -> None:
        if ttl_s:
            self._expiry[key] = time.monotonic() + ttl_s
        else:
            self._expiry.pop(key, None)

    async def get(self, key):
        value = self._live(key)
        return value if isinstance(value, str) else None

    async def set(self, key, value, ttl_s=None):
        self._data[key] = value
        self._expire(key, ttl_s)

    async def compare_and_set(self, key, expected, value):
        # No await between the read and the write: atomic on the event loop.
        if self._live(key) != expected:
            return False
        self._data[key] = value
        self._expiry.pop(key, None)  # as Redis's SET: no expiry afterwards
        return True

    async def delete(self, *keys):
        for key in keys:
            self._data.pop(key, None)
            self._expiry.pop(key, None)

    async def incr_window(self, key, amount, window_s):
        return self._add_window(key, amount, window_s)

    async def take_window(self, windows, reserve, window_s, quotas=()):
        # No await inside: atomic on the event loop, as the Lua script is in Redis.
        verdict, which, counts = 0, -1, []
        counted = [int(self._hash(hash_key).get(field, 0)) for hash_key, field, _ in quotas]
        for index, ((_, _, limit), count) in enumerate(zip(quotas, counted)):
            if verdict == 0 and count >= limit:
                verdict, which = 3, index
        for index, (requests_key, tokens_key, rpm, tpm) in enumerate(windows):
            requests = tokens = 0
            if rpm > 0 and verdict == 3:
                requests = int(self._live(requests_key) or 0)
            elif rpm > 0:
                requests = self._add_window(requests_key, 1, window_s)
                if verdict == 0 and requests > rpm:
                    verdict, which = 1, index
            if tpm > 0:
                tokens = int(self._live(tokens_key) or 0)
                if verdict == 0 and (tokens >= tpm or (tokens > 0 and tokens + reserve > tpm)):
                    verdict, which = 2, index
            counts.append([requests, tokens])
        used = []
        for (requests_key, tokens_key, _, tpm), (requests, tokens) in zip(windows, counts):
            if verdict == 0 and reserve > 0 and tpm > 0:
                tokens = self._add_window(tokens_key, reserve, window_s)
            used.append((requests, self._left(requests_key, window_s), tokens, self._left(tokens_key, window_s)))
        return verdict, which, used, counted

    async def settle_window(self, keys, amount, window_s):
        for key in keys:
            if self._live(key) is not None:
                self._data[key] = str(max(0, int(self._data[key]) + amount))
            elif amount > 0:
                self._add_window(key, amount, window_s)

    def _add_window(self, key: str, amount: int, window_s: int) -> int:
        current = self._live(key)
        if current is None:
            self._expire(key, window_s)
        total = int(current or 0) + amount
        self._data[key] = str(total)
        return total

    def _left(self, key: str, window_s: int) -> float:
        deadline = self._expiry.get(key) if self._live(key) is not None else None
        return max(0.0, deadline - time.monotonic()) if deadline is not None else float(window_s)

    async def get_indirect(self, index_key, prefix):
        target = await self.get(index_key)
        return await self.get(prefix + target) if target is not None else None

    async def hupdate(self, key, increments, values):
        current = self._live(key)
        record = dict(current) if isinstance(current, dict) else {}
        for field, amount in increments.items():
            record[field] = str(int(record.get(field, 0)) + amount)
        self._data[key] = {**record, **values}

    async def hupdate_many(self, updates):
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:  # buckets nobody reads again still go
            self.purge_expired()
        for key, increments, values, ttl_s in updates:
            record = self._hash(key)
            for field, amount in increments.items():
                record[field] = str(int(record.get(field, 0)) + amount)
            record.update(values)
            if ttl_s and key not in self._expiry:
                self._expire(key, ttl_s)
            self._data[key] = record

    async def hgetall_many(self, keys):
        return [dict(self._hash(key)) for key in keys]

    def _hash(self, key: str) -> dict:
        current = self._live(key)
        return current if isinstance(current, dict) else {}

    async def hset(self, key, mapping):
        current = self._live(key)
        self._data[key] = {**(current if isinstance(current, dict) else {}), **mapping}

    async def hgetall(self, key):
        value = self._live(key)
        return dict(value) if isinstance(value, dict) else {}

    async def hincrby(self, key, field, amount):
        current = self._live(key)
        mapping = current if isinstance(current, dict) else {}
        mapping[field] = str(int(mapping.get(field, 0)) + amount)
        self._data[key] = mapping
        return int(mapping[field])

    async def sadd(self, key, member):
        current = self._live(key)
        self._data[key] = (current if isinstance(current, set) else set()) | {member}

    async def srem(self, key, member):
        current = self._live(key)
        if isinstance(current, set):
            current.discard(member)

    async def smembers(self, key):
        value = self._live(key)
        return set(value) if isinstance(value, set) else set()

    async def zadd_expiring(self, key, member, deadline):
        now = time.time()
        current = self._live(key)
        index = {m: d for m, d in (current.items() if isinstance(current, dict) else ()) if d > now}
        index[member] = deadline
        self._data[key] = index
        self._expire(key, max(index.values()) - now)

    async def zlive(self, key):
        current = self._live(key)
        now = time.time()
        return {m for m, d in (current.items() if isinstance(current, dict) else ()) if d > now}

    async def ping(self):
        return True

    async def count(self, prefix):
        return sum(1 for key in list(self._data) if key.startswith(prefix) and self._live(key) is not None)

    async def ttl(self, key):
        deadline = self._expiry.get(key) if self._live(key) is not None else None
        return max(0.0, deadline - time.monotonic()) if deadline is not None else None

    async def expire(self, key, ttl_s):
        if self._live(key) is not None:
            self._expire(key, ttl_s)

    def purge_expired(self) -> int:
        """Drop every expired key now (reads drop them lazily; a long-lived store calls this)."""
        now = self._purged_at = time.monotonic()
        gone = [key for key, deadline in self._expiry.items() if deadline <= now]
        for key in gone:
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        return len(gone)



def _seconds(milliseconds: int, window_s: int) -> float:
    """A PTTL answer in seconds (a key without expiry, or gone, counts as a whole window)."""
    return int(milliseconds) / 1000 if int(milliseconds) >= 0 else float(window_s)


def make_store(redis_url: Optional[str], on_error: Callable[[], None] = lambda: None,
               password: Optional[str] = None) -> Store:
    return RedisStore(redis_url, on_error=on_error, password=password) if redis_url else MemoryStore()
