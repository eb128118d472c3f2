"""Where a batch job's state lives in the shared store, and how it is read back.

Two hashes per job, both expiring BATCH_JOB_TTL_S after the last write:
- `aicore:batchjob:<id>`: the job's small record (owner key id, status, counts, times, the
  ingress replica running it and its last heartbeat, a cancel request);
- `aicore:batchjob:<id>:results`: one field per finished item (its index), the item's result
  as JSON, exactly the object the synchronous endpoint returns for it.
The record is small so the runner can poll it for a cancel request; results are read only
when a client asks for them.

Indexes and per-key accounting, each bounded:
- `aicore:batchjobs` and `aicore:batchjobs:<owner>`: sorted sets of job ids (all jobs; one
  key's jobs) for listing, each member dropped once past the job's expiry (`zadd_expiring`);
  the set itself expires with its last member;
- `aicore:batchjobs:<owner>:active`: the key's unfinished jobs (BATCH_JOBS_PER_KEY of them at
  most: a submission adds itself, counts, and leaves again when over); a job leaves it when it
  ends, a job of a replica that died leaves it at the next count; it expires BATCH_JOB_TTL_S
  after the key's last submission;
- `aicore:batchbytes:<owner>`: bytes of results the key stored in the current BATCH_JOB_TTL_S
  window (a counter that expires with its window).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from serve_app.protocol.batch import BatchItemResult
from serve_app.state.store import Store

PREFIX = "aicore:batchjob:"
INDEX = "aicore:batchjobs"  # + ":<owner>" for one key's jobs, + ":<owner>:active" for its unfinished ones
BYTES = "aicore:batchbytes:"
CANCELLED_CODE = "cancelled"


@dataclass
class JobRecord:
    id: str
    owner: str  # the key id that submitted it
    status: str
    items: int
    created_at: float
    runner: str  # the ingress replica running it (a random id per replica process)
    heartbeat_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    tokens_used: int = 0
    cancel_requested: bool = False
    error: Optional[dict] = field(default=None)

    def to_hash(self) -> dict[str, str]:
        return {name: _encode(value) for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> "JobRecord":
        known = {f.name: f.type for f in fields(cls)}
        return cls(**{name: _decode(known[name], value) for name, value in data.items() if name in known})

    def count(self, results: dict[int, BatchItemResult]) -> None:
        """Set the counts from the results recorded so far."""
        self.succeeded = sum(r.status == "ok" for r in results.values())
        self.cancelled = sum(is_cancelled(r) for r in results.values())
        self.failed = len(results) - self.succeeded - self.cancelled
        self.tokens_used = sum(r.result.tokens_used for r in results.values() if r.result is not None)

    def counts_hash(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in ("succeeded", "failed", "cancelled", "tokens_used")}

    @property
    def pending(self) -> int:
        return max(0, self.items - self.succeeded - self.failed - self.cancelled)


def is_cancelled(result: BatchItemResult) -> bool:
    return result.status == "error" and (result.error or {}).get("code") == CANCELLED_CODE


def _encode(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _decode(kind: str, value: str):
    if "bool" in kind:
        return value == "1"
    if "dict" in kind:
        return json.loads(value)
    if "float" in kind:
        return float(value)
    if "int" in kind:
        return int(value)
    return value


class JobRecords:
    def __init__(self, store: Store, ttl_s: float):
        self.store = store
        self.ttl_s = ttl_s

    @staticmethod
    def _key(job_id: str) -> str:
        return PREFIX + job_id

    @staticmethod
    def _results_key(job_id: str) -> str:
        return PREFIX + job_id + ":results"

    async def create(self, record: JobRecord) -> None:
        await self.store.hset(self._key(record.id), record.to_hash())
        await self.store.expire(self._key(record.id), self.ttl_s)

    async def update(self, job_id: str, values: dict[str, str]) -> None:
        await self.store.hset(self._key(job_id), values)
        await self.store.expire(self._key(job_id), self.ttl_s)

    async def delete(self, job_id: str) -> None:
        await self.store.delete(self._key(job_id), self._results_key(job_id))

    async def keep(self, job_id: str) -> None:
        """Both keys live another TTL (a write by a replica other than the runner's)."""
        await self.store.expire(self._key(job_id), self.ttl_s)
        await self.store.expire(self._results_key(job_id), self.ttl_s)

    async def put_results(self, job_id: str, results: dict[int, BatchItemResult]) -> None:
        if results:
            mapping = {str(index): result.model_dump_json(exclude_none=True) for index, result in results.items()}
            await self.store.hset(self._results_key(job_id), mapping)
            await self.store.expire(self._results_key(job_id), self.ttl_s)

    async def touch(self, job_id: str, now: float) -> None:
        """The runner's heartbeat: the replica is alive; both keys live another TTL."""
        await self.store.hset(self._key(job_id), {"heartbeat_at": str(now)})
        await self.store.expire(self._key(job_id), self.ttl_s)
        await self.store.expire(self._results_key(job_id), self.ttl_s)

    async def load(self, job_id: str) -> Optional[JobRecord]:
        data = await self.store.hgetall(self._key(job_id))
        return JobRecord.from_hash(data) if data.get("id") == job_id else None

    async def results(self, job_id: str) -> list[BatchItemResult]:
        data = await self.store.hgetall(self._results_key(job_id))
        ordered = sorted(data.items(), key=lambda pair: int(pair[0]))
        return [BatchItemResult.model_validate_json(value) for _, value in ordered]

    async def expires_in(self, job_id: str) -> Optional[float]:
        return await self.store.ttl(self._key(job_id))

    # -- indexes and per-key accounting ------------------------------------------------------

    async def index(self, record: JobRecord, until: float) -> None:
        """List the job (in all jobs and its owner's) until `until` (epoch s): at least as long as
        its record lives; called at creation, at each heartbeat and when it ends."""
        await self.store.zadd_expiring(INDEX, record.id, until)
        await self.store.zadd_expiring(f"{INDEX}:{record.owner}", record.id, until)

    async def listed(self, owner: Optional[str]) -> list[str]:
        """The ids of the jobs listed (all, or one key's), newest first."""
        ids = await self.store.zlive(f"{INDEX}:{owner}" if owner is not None else INDEX)
        return sorted(ids, reverse=True)

    @staticmethod
    def _active_key(owner: str) -> str:
        return f"{INDEX}:{owner}:active"

    async def activate(self, owner: str, job_id: str) -> set[str]:
        """Count the job among its owner's unfinished ones; the ids now there (itself included)."""
        await self.store.sadd(self._active_key(owner), job_id)
        await self.store.expire(self._active_key(owner), self.ttl_s)
        return await self.store.smembers(self._active_key(owner))

    async def deactivate(self, owner: str, job_id: str) -> None:
        await self.store.srem(self._active_key(owner), job_id)

    async def result_bytes(self, owner: str) -> tuple[int, Optional[float]]:
        """Bytes of results the key stored in the current window, and the seconds left in it."""
        used = await self.store.get(BYTES + owner)
        return (int(used), await self.store.ttl(BYTES + owner)) if used else (0, None)

    async def charge_bytes(self, owner: str, amount: int) -> int:
        """Add `amount` stored bytes to the key's window; its new total."""
        return await self.store.incr_window(BYTES + owner, amount, max(1, int(self.ttl_s)))
