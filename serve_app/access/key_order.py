"""The key list's order indexes, so that a page of `GET /api/v1/keys` without `search` reads the
indexes and its own records only (O(limit) store reads, whatever the number of keys):
  aicore:keys:order       sorted set: admin-made key id -> when it was made (bounded as the keys)
  aicore:webtokens:order  sorted set: web token id -> when it was made; tokens made longer ago than
                          any token's entries live are dropped at each mint, and the set expires
                          with its last member (bounded by design)
The list's order is (created_at, id); a page merges the two indexes in that order. A web token
whose record has expired is stepped over and dropped from its index. Keys stored before the
indexes existed are added to them once per store (`aicore:keys:order:ready` says it was done).
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable, Iterable, Optional

from serve_app.protocol.keys import WEB_TOKEN_MAX_TTL_S, KeyView
from serve_app.state.store import Store

ORDER, WEB_ORDER, ORDER_READY = "aicore:keys:order", "aicore:webtokens:order", "aicore:keys:order:ready"


class KeyOrder:
    def __init__(self, store: Store, web_token_keep_s: float):
        self.store = store
        self.lives_s = WEB_TOKEN_MAX_TTL_S + web_token_keep_s + 1  # the longest a web token's entries last
        self._ready = False

    async def add(self, key_id: str, created_at: float, web_token: bool) -> None:
        if web_token:
            now = time.time()
            await self.store.zadd(WEB_ORDER, key_id, created_at, drop_below=now - self.lives_s,
                                  expire_at=now + self.lives_s)
        else:
            await self.store.zadd(ORDER, key_id, created_at)

    async def page(self, count: int, cursor: Optional[tuple[float, str]],
                   load: Callable[[str], Awaitable[Optional[KeyView]]]) -> list[KeyView]:
        """Up to `count` keys after `cursor` (created_at, id of the previous page's last key; None:
        from the first), loaded by `load` (None: gone)."""
        views: list[KeyView] = []
        gone: list[str] = []
        while len(views) < count:
            asked = count - len(views)
            found = await self.store.zafter(ORDER, cursor, asked) + await self.store.zafter(WEB_ORDER, cursor, asked)
            found = sorted(found, key=lambda item: (item[1], item[0]))[:asked]
            for key_id, _ in found:
                view = await load(key_id)
                if view is None:  # a web token whose entries expired
                    gone.append(key_id)
                else:
                    views.append(view)
            if len(found) < asked:  # both indexes read to their end
                break
            cursor = (found[-1][1], found[-1][0])
        await self.store.zrem(WEB_ORDER, *gone)
        return views

    async def ensure(self, listed: Callable[[], Awaitable[Iterable[KeyView]]]) -> None:
        """Add the keys `listed` returns (every key, read the slow way) once per store."""
        if self._ready or await self.store.get(ORDER_READY) is not None:
            self._ready = True
            return
        for view in await listed():
            await self.add(view.id, view.created_at, view.web_token)
        await self.store.set(ORDER_READY, "1")
        self._ready = True
