"""A `Store` every ingress replica shares when REDIS_URL is unset: a `MemoryStore` in one actor.

Without Redis each ingress replica's `MemoryStore` is its own, which suits per-replica state
(cache, limits) but not state another replica must read: a batch job accepted by one replica
is polled through any, a Telegram chat's history is read by whichever replica gets its next
update. `StateHub` is the one-replica deployment that holds one `MemoryStore`, and `RemoteStore`
reaches it through the deployment handle with the `Store` protocol's meaning. The hub's memory
is lost when its actor restarts; with REDIS_URL set, Redis is used instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from core.errors import AICoreError, StoreUnavailable
from serve_app.state.store import MemoryStore

logger = logging.getLogger("aicore.store")

PURGE_EVERY_S = 60.0
CALL_TIMEOUT_S = 5.0  # a hub that does not answer (stopped, restarting) is unavailable, never a hang
STORE_METHODS = frozenset({
    "get", "set", "compare_and_set", "delete", "incr_window", "take_window", "settle_window", "get_indirect",
    "hupdate", "hupdate_many", "hgetall_many", "hset", "hgetall", "hincrby", "sadd", "srem", "smembers", "zadd_expiring", "zlive",
    "zadd", "zrem", "zafter", "count", "ttl", "expire",
})


class StateHub:
    """The shared-state deployment (one replica): one `MemoryStore`."""

    def __init__(self) -> None:
        from deployments.ray_net import bind_replica_grpc_to_node_ip  # here: deployments imports serve_app

        bind_replica_grpc_to_node_ip()
        self.memory = MemoryStore()
        self._purged_at = time.monotonic()

    async def store_call(self, method: str, args: tuple) -> Any:
        if method not in STORE_METHODS:
            raise ValueError(f"not a store method: {method!r}")
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:  # expired entries nobody reads again
            self._purged_at = time.monotonic()
            self.memory.purge_expired()
        return await getattr(self.memory, method)(*args)


class RemoteStore:
    """`Store` over a `StateHub` handle; an unreachable hub is `StoreUnavailable` (503)."""

    kind = "hub"

    def __init__(self, handle: Any):
        self.handle = handle

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(self.handle.store_call.remote(method, args), CALL_TIMEOUT_S)
        except AICoreError:
            raise
        except Exception as error:  # an actor or handle failure: the state cannot be reached
            logger.error("state hub call %s failed: %s", method, type(error).__name__)
            raise StoreUnavailable(f"the shared state is unreachable ({type(error).__name__})") from None

    async def get(self, key: str) -> Optional[str]:
        return await self._call("get", key)

    async def set(self, key: str, value: str, ttl_s: Optional[float] = None) -> None:
        await self._call("set", key, value, ttl_s)

    async def compare_and_set(self, key: str, expected: str, value: str) -> bool:
        return await self._call("compare_and_set", key, expected, value)

    async def delete(self, *keys: str) -> None:
        await self._call("delete", *keys)

    async def incr_window(self, key: str, amount: int, window_s: int) -> int:
        return await self._call("incr_window", key, amount, window_s)

    async def take_window(self, windows: list, reserve: int, window_s: int, quotas: list = ()) -> tuple:
        return tuple(await self._call("take_window", windows, reserve, window_s, list(quotas)))

    async def settle_window(self, keys: list[str], amount: int, window_s: int) -> None:
        await self._call("settle_window", keys, amount, window_s)

    async def get_indirect(self, index_key: str, prefix: str) -> Optional[str]:
        return await self._call("get_indirect", index_key, prefix)

    async def hupdate(self, key: str, increments: dict[str, int], values: dict[str, str]) -> None:
        await self._call("hupdate", key, increments, values)

    async def hupdate_many(self, updates: list) -> None:
        await self._call("hupdate_many", updates)

    async def hgetall_many(self, keys: list[str]) -> list[dict[str, str]]:
        return await self._call("hgetall_many", keys)

    async def hset(self, key: str, mapping: dict[str, str]) -> None:
        await self._call("hset", key, mapping)

    async def hgetall(self, key: str) -> dict[str, str]:
        return await self._call("hgetall", key)

    async def hincrby(self, key: str, field: str, amount: int) -> int:
        return await self._call("hincrby", key, field, amount)

    async def sadd(self, key: str, member: str) -> None:
        await self._call("sadd", key, member)

    async def srem(self, key: str, member: str) -> None:
        await self._call("srem", key, member)

    async def smembers(self, key: str) -> set[str]:
        return await self._call("smembers", key)

    async def zadd_expiring(self, key: str, member: str, deadline: float) -> None:
        await self._call("zadd_expiring", key, member, deadline)

    async def zlive(self, key: str) -> set[str]:
        return await self._call("zlive", key)

    async def zadd(self, key: str, member: str, score: float, drop_below: Optional[float] = None,
                   expire_at: Optional[float] = None) -> None:
        await self._call("zadd", key, member, score, drop_below, expire_at)

    async def zrem(self, key: str, *members: str) -> None:
        await self._call("zrem", key, *members)

    async def zafter(self, key: str, after: Optional[tuple[float, str]], count: int) -> list[tuple[str, float]]:
        return await self._call("zafter", key, after, count)

    async def ping(self) -> bool:
        try:
            await self._call("get", "aicore:ping")
            return True
        except StoreUnavailable:
            return False

    async def count(self, prefix: str) -> int:
        return await self._call("count", prefix)

    async def ttl(self, key: str) -> Optional[float]:
        return await self._call("ttl", key)

    async def expire(self, key: str, ttl_s: float) -> None:
        await self._call("expire", key, ttl_s)
