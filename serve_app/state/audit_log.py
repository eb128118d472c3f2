"""The audit log: who did what to keys, models, jobs and the configuration, and who was refused.

Three append-only streams, read as one, newest first; each bounded by a retention and its own
length cap, trimmed exactly at every append (Redis: XADD MAXLEN and XTRIM MINID in one script;
exact trimming costs little at these rates, and the bounds are what they say):
  aicore:audit          admin actions (keys, models, jobs, config): AUDIT_MAX_ENTRIES,
                        AUDIT_RETENTION_DAYS
  aicore:audit:tokens   web-token mints (a public site's backend mints one per visitor): their
                        own cap, AUDIT_MINT_MAX_ENTRIES, and their own retention,
                        AUDIT_MINT_RETENTION_S; the stream itself also expires that long after
                        its newest mint, so a burst of mints leaves nothing once it is that old
                        (trimming alone runs only when the next mint comes)
  aicore:audit:refused  refused attempts at admin routes (anyone can cause them): their own cap,
                        AUDIT_REFUSED_MAX_ENTRIES, AUDIT_RETENTION_DAYS
so a flood of mints or of refused requests evicts older entries of its own kind, never an admin
action. Ids are stream ids `<ms>-<seq>` whose sequence number is the stream's index modulo 3, so
an id names one entry of any stream and the three merge into one order. Without REDIS_URL each ingress
replica keeps its own log in memory, as it keeps its own keys. Entries never hold a key's secret
or hash: callers pass field changes of key views (serve_app/access/keys.py has no secret there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

logger = logging.getLogger("aicore.audit")

ACTIONS_STREAM, MINTS_STREAM, REFUSED_STREAM = "aicore:audit", "aicore:audit:tokens", "aicore:audit:refused"
STREAMS = (ACTIONS_STREAM, MINTS_STREAM, REFUSED_STREAM)  # an entry's sequence number is its index modulo 3
REFUSED, MINT = "admin.refused", "web_token.mint"
SCAN_CHUNK = 200  # entries read per round trip while filtering
SCAN_MAX = 5000  # entries one page examines per stream at most; then `next_before` continues
# Entries the store could not take (it is down) are kept in memory, up to this many (the oldest
# go first), and written again every RETRY_S until it takes them: an outage is when refusals
# (503 store_unavailable) and failed actions most need recording.
PENDING_MAX = 1000
RETRY_S = 1.0
Id = tuple[int, int]

# Append one entry with an id above the stream's last one and of the stream's index (modulo 3),
# then trim by length and age. KEYS: the stream; ARGV: index, max length, oldest id kept (ms), JSON,
# and the stream's own lifetime after this entry (ms; 0: none).
_APPEND = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '(%d+)-(%d+)')
  if tonumber(lms) >= ms then ms, seq = tonumber(lms), tonumber(lseq) + 3 end
end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id, 'e', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return id
"""


def stream_of(action: str) -> str:
    return {REFUSED: REFUSED_STREAM, MINT: MINTS_STREAM}.get(action, ACTIONS_STREAM)


def parse_id(value: str) -> Id:
    """`<ms>-<seq>` -> (ms, seq); ValueError otherwise."""
    ms, _, seq = value.partition("-")
    if not (ms.isdigit() and seq.isdigit()):
        raise ValueError(f"not an audit entry id: {value!r}")
    return int(ms), int(seq)


def format_id(entry_id: Id) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


@dataclass(frozen=True)
class Actor:
    """Who acted: a key id (never the key) and its name; or a command (`scripts.deploy`)."""

    id: str
    name: Optional[str] = None


@dataclass(frozen=True)
class Query:
    actor_id: Optional[str] = None
    action: Optional[str] = None
    target: Optional[str] = None
    since: Optional[float] = None  # unix time, inclusive
    until: Optional[float] = None  # unix time, inclusive
    before: Optional[str] = None  # an entry id: the page after it (older entries)
    limit: int = 50

    def matches(self, entry: dict) -> bool:
        return all(wanted is None or entry.get(name) == wanted for name, wanted in
                   (("actor_id", self.actor_id), ("action", self.action), ("target", self.target)))

    def streams(self) -> tuple[str, ...]:
        return STREAMS if self.action is None else (stream_of(self.action),)

    def upper(self) -> Optional[Id]:
        """The exclusive upper bound of ids to read."""
        bounds = []
        if self.before is not None:
            bounds.append(parse_id(self.before))
        if self.until is not None:
            bounds.append((int(self.until * 1000) + 1, 0))
        return min(bounds) if bounds else None

    def lower(self) -> Optional[Id]:
        return (math.ceil(self.since * 1000), 0) if self.since is not None else None


class MemoryStreams:
    """The streams in one process (no Redis): deques trimmed at each append."""

    def __init__(self) -> None:
        self.streams: dict[str, deque] = {name: deque() for name in STREAMS}

    async def append(self, stream: str, index: int, data: str, max_len: int, min_ms: int, expire_ms: int = 0) -> str:
        entries = self.streams[stream]  # one process's memory: trimming by age at each append bounds it
        entry_id = (int(time.time() * 1000), index)
        if entries and entries[-1][0] >= entry_id:
            entry_id = (entries[-1][0][0], entries[-1][0][1] + len(STREAMS))
        entries.append((entry_id, data))
        while entries and (len(entries) > max_len or entries[0][0][0] < min_ms):
            entries.popleft()
        return format_id(entry_id)

    async def newest(self, stream: str, upper: Optional[Id], lower: Optional[Id], count: int) -> list[tuple[Id, str]]:
        found = []
        for entry_id, data in reversed(self.streams[stream]):
            if upper is not None and entry_id >= upper:
                continue
            if lower is not None and entry_id < lower or len(found) == count:
                break
            found.append((entry_id, data))
        return found


class RedisStreams:
    """The streams in Redis, reached through the RedisStore (its errors become StoreUnavailable)."""

    def __init__(self, store: Any):
        self.store = store
        self._append = store.client.register_script(_APPEND)

    async def append(self, stream: str, index: int, data: str, max_len: int, min_ms: int, expire_ms: int = 0) -> str:
        return await self.store._call(self._append(keys=[stream], args=[index, max_len, min_ms, data, expire_ms]))

    async def newest(self, stream: str, upper: Optional[Id], lower: Optional[Id], count: int) -> list[tuple[Id, str]]:
        if upper == (0, 0):
            return []
        high = "(" + format_id(upper) if upper is not None else "+"
        low = format_id(lower) if lower is not None else "-"
        rows = await self.store._call(self.store.client.xrevrange(stream, high, low, count=count))
        return [(parse_id(entry_id), fields.get("e", "{}")) for entry_id, fields in rows]


class AuditLog:
    def __init__(self, streams: Any, retention_days: float = 90, max_entries: int = 1_000_000,
                 mint_max_entries: int = 10_000, refused_max_entries: int = 10_000,
                 mint_retention_s: float = 172_800):
        self.streams = streams
        self.retention_s = retention_days * 86400
        self.mint_retention_s = mint_retention_s
        self.caps = {ACTIONS_STREAM: max_entries, MINTS_STREAM: mint_max_entries, REFUSED_STREAM: refused_max_entries}
        self.pending: deque[tuple[str, str]] = deque(maxlen=PENDING_MAX)  # (stream, entry JSON)
        self._retrying: Optional[asyncio.Task] = None

    @classmethod
    def for_store(cls, store: Any, **settings: Any) -> "AuditLog":
        return cls(RedisStreams(store) if getattr(store, "kind", None) == "redis" else MemoryStreams(), **settings)

    async def record(self, actor: Actor, client_ip: Optional[str], action: str, target: Optional[str],
                     outcome: str = "ok", status: int = 200, changes: Optional[dict] = None,
                     route: Optional[str] = None, reason: Optional[str] = None) -> Optional[str]:
        """Append one entry; its id, or None when the store could not take it (then it is kept in
        memory and written when the store is back, with the time it happened). Never raises: the
        action it records has happened (or was refused) already."""
        entry = {"actor_id": actor.id, "actor_name": actor.name, "client_ip": client_ip, "action": action,
                 "target": target, "outcome": outcome, "status": status, "changes": changes or {}}
        if route is not None:  # a refused attempt: the route asked, the error code answered
            entry["route"], entry["reason"] = route, reason
        stream = stream_of(action)
        data = json.dumps(entry, separators=(",", ":"), default=str)
        try:
            return await self._append(stream, data)
        except Exception as error:  # noqa: BLE001 - the store is down or refused: keep the entry for later
            logger.error("audit entry not stored yet (%s), kept to retry: %s", type(error).__name__, data)
            late = json.dumps({**entry, "time": time.time()}, separators=(",", ":"), default=str)
            self.pending.append((stream, late))
            if self._retrying is None or self._retrying.done():
                self._retrying = asyncio.get_running_loop().create_task(self._retry())
            return None

    async def _append(self, stream: str, data: str) -> str:
        retention_s = self.mint_retention_s if stream == MINTS_STREAM else self.retention_s
        expire_ms = math.ceil(retention_s * 1000) if stream == MINTS_STREAM else 0
        return await self.streams.append(stream, STREAMS.index(stream), data, self.caps[stream],
                                         int((time.time() - retention_s) * 1000), expire_ms)

    async def _retry(self) -> None:
        """Write the kept entries, oldest first, once the store takes them again."""
        while self.pending:
            await asyncio.sleep(RETRY_S)
            while self.pending:
                stream, data = self.pending[0]
                try:
                    await self._append(stream, data)
                except Exception:  # noqa: BLE001 - still down: try again later
                    break
                self.pending.popleft()

    async def page(self, query: Query) -> tuple[list[dict], Optional[str]]:
        """Entries newest first matching `query`, and the `before` of the next page (None: no more).
        Each stream is read down to where it has `limit` matches or SCAN_MAX entries were examined;
        entries are kept only above the highest point any stream stopped at, so that the next page
        (from there) misses nothing."""
        upper, lower = query.upper(), query.lower()
        found: list[tuple[Id, dict]] = []
        floors: list[Id] = []
        for stream in query.streams():
            matches, floor = await self._scan(stream, query, upper, lower)
            found += matches
            if floor is not None:
                floors.append(floor)
        floor = max(floors) if floors else None
        found = sorted((e for e in found if floor is None or e[0] >= floor), key=lambda e: e[0], reverse=True)
        page = found[:query.limit]
        if len(found) > query.limit:
            return [entry for _, entry in page], format_id(page[-1][0])
        return [entry for _, entry in page], format_id(floor) if floor is not None else None

    async def _scan(self, stream: str, query: Query, upper: Optional[Id], lower: Optional[Id]):
        """(matches, floor): floor is the id of the last entry examined when the stream was not read
        to its end (or to `lower`)."""
        matches: list[tuple[Id, dict]] = []
        examined = 0
        while examined < SCAN_MAX:
            rows = await self.streams.newest(stream, upper, lower, SCAN_CHUNK)
            for entry_id, data in rows:
                examined += 1
                entry = _entry(entry_id, data)
                if query.matches(entry):
                    matches.append((entry_id, entry))
                if len(matches) >= query.limit or examined >= SCAN_MAX:
                    return matches, entry_id
            if len(rows) < SCAN_CHUNK:
                return matches, None
            upper = rows[-1][0]
        return matches, upper


def _entry(entry_id: Id, data: str) -> dict:
    entry = json.loads(data)
    return {"id": format_id(entry_id), "time": entry_id[0] / 1000, **entry}


def field_changes(before: Optional[dict], after: Optional[dict]) -> dict:
    """{"field": {"before": .., "after": ..}} of the fields that differ (a missing side is null)."""
    before, after = before or {}, after or {}
    return {name: {"before": before.get(name), "after": after.get(name)}
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)}
