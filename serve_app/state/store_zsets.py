"""Ordered indexes in the store (sorted sets: the key list's order, serve_app/access/key_order.py),
for RedisStore and MemoryStore alike: add (dropping members scored below a bound, with an expiry),
remove, and read a page after a position (score, member) in (score, member) order."""

from __future__ import annotations

import time

# Up to `count` members after the position (score, member) (score '': from the first), with their
# scores, in one round trip. Members tied with that score are stepped over (read, not returned).
ZAFTER = """
local count = tonumber(ARGV[3])
if ARGV[1] == '' then return redis.call('ZRANGE', KEYS[1], 0, count - 1, 'WITHSCORES') end
local score, member = tonumber(ARGV[1]), ARGV[2]
local out, offset = {}, 0
while #out < 2 * count do
  local rows = redis.call('ZRANGE', KEYS[1], ARGV[1], '+inf', 'BYSCORE', 'LIMIT', offset, count, 'WITHSCORES')
  for i = 1, #rows, 2 do
    if (tonumber(rows[i + 1]) > score or rows[i] > member) and #out < 2 * count then
      table.insert(out, rows[i])
      table.insert(out, rows[i + 1])
    end
  end
  if #rows < 2 * count then break end
  offset = offset + count
end
return out
"""


class RedisZSets:
    """Mixed into RedisStore (its `client` and `_call`)."""

    async def zadd(self, key, member, score, drop_below=None, expire_at=None):
        """Add `member`; with `drop_below`, members scored below it go in the same round trip, and
        with `expire_at` (epoch s) the set expires then or later (bounded by design)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(key, {member: score})
        if drop_below is not None:
            pipe.zremrangebyscore(key, "-inf", f"({drop_below}")
        if expire_at is not None:
            pipe.execute_command("PEXPIREAT", key, int(expire_at * 1000), "GT")  # a later expiry: moved
            pipe.execute_command("PEXPIREAT", key, int(expire_at * 1000), "NX")  # none yet: set
        await self._call(pipe.execute())

    async def zrem(self, key, *members):
        if members:
            await self._call(self.client.zrem(key, *members))

    async def zafter(self, key, after, count):
        """Up to `count` (member, score) after `after` = (score, member) (None: from the first)."""
        if getattr(self, "_zafter", None) is None:
            self._zafter = self.client.register_script(ZAFTER)
        score, member = after if after is not None else ("", "")
        rows = await self._call(self._zafter(keys=[key], args=[score, member, count]))
        return [(rows[i], float(rows[i + 1])) for i in range(0, len(rows), 2)]


class MemoryZSets:
    """Mixed into MemoryStore (its `_data`, `_expiry`, `_live`, `_expire`): a dict member -> score."""

    async def zadd(self, key, member, score, drop_below=None, expire_at=None):
        current = self._live(key)
        index = {**(current if isinstance(current, dict) else {}), member: score}
        if drop_below is not None:
            index = {m: s for m, s in index.items() if s >= drop_below}
        self._data[key] = index
        if expire_at is not None:
            deadline, left = self._expiry.get(key), expire_at - time.time()
            if deadline is None or deadline - time.monotonic() < left:
                self._expire(key, left)

    async def zrem(self, key, *members):
        current = self._live(key)
        for member in members if isinstance(current, dict) else ():
            current.pop(member, None)

    async def zafter(self, key, after, count):
        current = self._live(key)
        ordered = sorted((s, m) for m, s in (current.items() if isinstance(current, dict) else ()))
        return [(m, float(s)) for s, m in ordered if after is None or (s, m) > tuple(after)][:count]
