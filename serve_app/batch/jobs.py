"""Asynchronous batch jobs: the email bot's large batches, run in the background, polled, cancellable.

A job runs in the ingress replica that accepted it, as an asyncio task that outlives the HTTP
request; its record and results live in the shared store (Redis, or the state hub without it:
`serve_app.state.shared_store`), so any ingress replica answers a poll or a cancel.

- At most BATCH_JOBS_PER_REPLICA jobs run at once in one replica; later ones stay `queued`.
  Items of a job run BATCH_CONCURRENCY at a time, each with priority `batch` (unless the item
  says otherwise), exactly as the synchronous endpoint runs them. A model that refuses an item
  for overload (503) is asked again after its Retry-After: a job waits, it does not fail items.
- Cancel: the replica running the job sees the request within CANCEL_POLL_S; running items are
  cancelled (the models stop generating), the rest never start; each gets a `cancelled` error.
- The replica stops (restart, scale-down, redeploy): its running jobs end `failed` with code
  `job_interrupted` at shutdown, keeping the results finished so far. A replica that dies without
  shutting down stops its heartbeat; the first poll that finds the heartbeat older than
  STALE_BEATS heartbeats marks the job failed the same way. Jobs are not resumed elsewhere (the
  items are not stored): the client resubmits the items without a result.

Charged and bounded (docs/security.md, "Batch jobs"):
- The submission is one request of the key's (RPM: 429 past it); the items then reserve their
  own tokens (TPM) and count as requests one by one as they run, as the synchronous endpoint's.
- Each item looks the key up again by id (one store read) before it runs: a key revoked,
  disabled, expired, deleted, or that lost the `inference` scope or the submitting address,
  stops the job (`cancelled`, the error names why: `key_revoked`, ...); nothing of the key is
  kept from the submission but its id. Its model list and limits are the key's current ones.
- Per key (bootstrap keys are exempt, as from rate limits): at most BATCH_JOBS_PER_KEY jobs
  unfinished (429 `too_many_batch_jobs`), and BATCH_JOB_RESULT_BYTES_PER_KEY bytes of results
  stored per BATCH_JOB_TTL_S window (429 `batch_result_quota_exceeded`; a running job that
  reaches it ends `failed` with that code, its remaining items not run). An item `id` longer
  than ITEM_ID_MAX_CHARS refuses the whole job (400), and an item's error never echoes much of
  its input.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, Callable, Optional

from core.errors import (
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    ResultQuotaExceeded,
    StoreUnavailable,
    TooManyBatchJobs,
)
from core.settings import Settings
from serve_app.batch.job_common import (
    CANCEL_WAIT_S,
    JOBS_PATH,
    STALE_BEATS,
    LocalJob,
    interrupted_error,
    new_job_id,
    to_json,
)
from serve_app.batch.job_runner import BatchJobRunner
from serve_app.batch.service import ITEM_ID_MAX_CHARS, BatchService, prepare
from serve_app.pipeline import Admission
from serve_app.protocol.batch import BatchItemResult, BatchRequest
from serve_app.protocol.batch_jobs import JOB_ID_PATTERN, TERMINAL, BatchJob, BatchJobCounts, BatchJobList
from serve_app.state.batch_job_records import JobRecord, JobRecords
from serve_app.state.store import Store

logger = logging.getLogger("aicore.batch_jobs")
SEES_EVERY_JOB = frozenset({"admin", "admin_read"})  # scopes that list and read every key's jobs


def sees_every_job(principal: Any) -> bool:
    return bool(SEES_EVERY_JOB & principal.scopes)


class BatchJobService(BatchJobRunner):
    def __init__(self, batch: BatchService, store: Store, settings: Settings,
                 clock: Callable[[], float] = time.time):
        self.batch = batch
        self.pipeline = batch.pipeline  # each item is admitted there, the key looked up in its key service
        self.settings = settings
        self.records = JobRecords(store, settings.batch_job_ttl_s)
        self.clock = clock
        self.runner_id = uuid.uuid4().hex[:12]
        self.jobs: dict[str, LocalJob] = {}
        self._slots = asyncio.Semaphore(settings.batch_jobs_per_replica)
        self._watcher: Optional[asyncio.Task] = None
        self._beat_at = 0.0

    # -- the three calls of the HTTP API --------------------------------------------------

    async def submit(self, body: BatchRequest, caller: Admission) -> BatchJob:
        """Accept a job (`caller`: the submitting request's admission, its limits not taken yet)."""
        limit = self.settings.batch_job_max_items
        if len(body.items) > limit:
            raise InvalidRequest(f"{len(body.items)} items; a batch job takes at most {limit}",
                                 param="items", code="too_many_items")
        for index, raw in enumerate(body.items):  # stored and echoed: never a megabyte of id
            value = raw.get("id")
            if isinstance(value, str) and len(value) > ITEM_ID_MAX_CHARS:
                raise InvalidRequest(f"items.{index}.id: at most {ITEM_ID_MAX_CHARS} characters",
                                     param=f"items.{index}.id", code="invalid_value")
        await caller.limit()  # the submission is one request (RPM); each item reserves its own tokens
        principal = caller.principal
        if not principal.bootstrap:
            await self._check_result_quota(principal.key_id)
        now = self.clock()
        record = JobRecord(id=new_job_id(now), owner=principal.key_id, status="queued",
                           items=len(body.items), created_at=now, runner=self.runner_id, heartbeat_at=now)
        await self.records.create(record)  # the store is down: 503 before anything is accepted
        try:
            if not principal.bootstrap:
                await self._take_job_slot(record)
            await self.records.index(record, self._listed_until())
        except BaseException:
            await self._forget(record)
            raise
        job = LocalJob(record, prepare(body.items, body.format), principal, caller.context.client_ip)
        self.jobs[record.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"batch-job-{record.id}")
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="batch-job-watcher")
        return self.view(record, None, self.settings.batch_job_ttl_s)

    async def list(self, principal: Any, owner: Optional[str] = None, status: Optional[str] = None,
                   limit: int = 20, after: Optional[str] = None) -> BatchJobList:
        """Jobs newest first, a page of `limit` after the job `after`: every job for an admin
        (`owner`: one key's), a key's own otherwise (another `owner` lists nothing)."""
        if not sees_every_job(principal):
            if owner not in (None, principal.key_id):
                return BatchJobList(data=[], has_more=False)
            owner = principal.key_id
        page: list[BatchJob] = []
        more = False
        for job_id in await self.records.listed(owner):
            if after is not None and job_id >= after:
                continue
            record = await self.records.load(job_id)
            if record is None or (owner is not None and record.owner != owner):
                continue
            record = await self._check_alive(record)
            if status is not None and record.status != status:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(self.view(record, None, await self.records.expires_in(job_id)))
        return BatchJobList(data=page, first_id=page[0].id if page else None,
                            last_id=page[-1].id if page else None, has_more=more)

    async def get(self, job_id: str, principal: Any, with_results: bool = True) -> BatchJob:
        record = await self._owned(job_id, principal)
        results = await self.records.results(job_id) if with_results else None
        return self.view(record, results, await self.records.expires_in(job_id))

    async def cancel(self, job_id: str, principal: Any) -> BatchJob:
        record = await self._owned(job_id, principal)
        if record.owner != principal.key_id and "admin" not in principal.scopes:  # admin_read sees, never changes
            raise PermissionDenied("this API key lacks the 'admin' scope: only an admin cancels another key's job")
        if record.status not in TERMINAL:
            await self.records.update(job_id, {"cancel_requested": "1"})
            job = self.jobs.get(job_id)
            if job is not None:  # ours: stop it now and wait until its final state is written
                job.stop("cancelled")
                await asyncio.wait({job.task})
            else:  # another replica's: its watcher sees the request within CANCEL_POLL_S
                for _ in range(int(CANCEL_WAIT_S / 0.1)):
                    current = await self.records.load(job_id)
                    if current is None or current.status in TERMINAL:
                        break
                    await asyncio.sleep(0.1)
        return await self.get(job_id, principal)

    async def shutdown(self) -> None:
        """The replica is stopping: every job it runs ends `failed` (interrupted), results kept."""
        jobs = list(self.jobs.values())
        for job in jobs:
            job.stop("interrupted")
        if jobs:
            await asyncio.wait({job.task for job in jobs})
        if self._watcher is not None:
            self._watcher.cancel()

    # -- reading ---------------------------------------------------------------------------

    async def _owned(self, job_id: str, principal: Any) -> JobRecord:
        record = await self.records.load(job_id) if re.fullmatch(JOB_ID_PATTERN, job_id) else None
        if record is None or (record.owner != principal.key_id and not sees_every_job(principal)):
            raise JobNotFound(f"batch job {job_id!r} does not exist", param="job_id")
        return await self._check_alive(record)

    async def _check_alive(self, record: JobRecord) -> JobRecord:
        """A job whose replica stopped beating (killed, node lost) is failed: nobody will finish it."""
        if record.status in TERMINAL or record.id in self.jobs:
            return record
        silent_s = self.clock() - record.heartbeat_at
        if silent_s <= STALE_BEATS * self.settings.batch_job_heartbeat_s:
            return record
        record.status, record.finished_at = "failed", record.heartbeat_at
        record.error = interrupted_error(record.pending)
        logger.warning("batch job %s: runner %s silent for %.0fs, marked interrupted", record.id, record.runner, silent_s)
        await self.records.update(record.id, {"status": "failed", "finished_at": str(record.finished_at),
                                              "error": to_json(record.error)})
        await self.records.keep(record.id)  # the results live as long as the record
        await self._ended(record)
        return record

    # -- per-key bounds --------------------------------------------------------------------

    async def _check_result_quota(self, owner: str) -> None:
        quota = self.settings.batch_job_result_bytes_per_key
        used, left_s = await self.records.result_bytes(owner)
        if used >= quota:
            wait_s = int(left_s if left_s is not None else self.settings.batch_job_ttl_s) + 1
            raise ResultQuotaExceeded(
                f"this key's batch jobs stored {used} bytes of results in this window of "
                f"{int(self.settings.batch_job_ttl_s)} s (at most {quota}): try again in {wait_s} s",
                kind="requests", retry_after_s=wait_s)

    async def _take_job_slot(self, record: JobRecord) -> None:
        """Count the new job among its key's unfinished ones (in the shared store, so across
        replicas): over BATCH_JOBS_PER_KEY, 429. Add first, then count: two submissions racing for
        the last slot may both be refused, never both accepted."""
        cap = self.settings.batch_jobs_per_key
        unfinished = 0
        for job_id in await self.records.activate(record.owner, record.id):
            if job_id == record.id:
                unfinished += 1
                continue
            other = await self.records.load(job_id)
            if other is not None:
                other = await self._check_alive(other)  # a dead replica's job ends here
            if other is None or other.status in TERMINAL:
                await self.records.deactivate(record.owner, job_id)  # ended without leaving (replica lost)
            else:
                unfinished += 1
        if unfinished > cap:
            raise TooManyBatchJobs(
                f"this key has {cap} batch jobs queued or running (BATCH_JOBS_PER_KEY): wait for one to "
                "finish, or cancel one", kind="requests", retry_after_s=max(1, int(self.settings.batch_job_heartbeat_s)))

    async def _forget(self, record: JobRecord) -> None:
        """A submission refused after its record was written: nothing of it stays."""
        try:
            await self.records.deactivate(record.owner, record.id)
            await self.records.delete(record.id)
        except StoreUnavailable:
            logger.warning("batch job %s: refused, but its record could not be removed", record.id)

    async def _ended(self, record: JobRecord) -> None:
        """The job is final: it leaves its key's unfinished jobs; it stays listed while it is kept."""
        await self.records.deactivate(record.owner, record.id)
        await self.records.index(record, self._listed_until())

    def _listed_until(self) -> float:
        """A job is listed at least as long as its record lives: the TTL from its last write (a
        heartbeat at the latest, or its final write), with room for the writes between beats.
        Wall-clock epoch seconds, as the store's index compares them."""
        return time.time() + self.settings.batch_job_ttl_s + STALE_BEATS * self.settings.batch_job_heartbeat_s

    def view(self, record: JobRecord, results: Optional[list[BatchItemResult]], expires_in: Optional[float]) -> BatchJob:
        processing = None
        if record.started_at is not None and record.finished_at is not None:
            processing = round(max(0.0, record.finished_at - record.started_at), 4)
        return BatchJob(
            id=record.id, owner=record.owner, status=record.status, status_url=f"{JOBS_PATH}/{record.id}",
            created_at=int(record.created_at), started_at=_int(record.started_at),
            finished_at=_int(record.finished_at),
            expires_at=int(self.clock() + expires_in) if expires_in is not None else None,
            cancel_requested=record.cancel_requested,
            counts=BatchJobCounts(items=record.items, succeeded=record.succeeded, failed=record.failed,
                                  cancelled=record.cancelled, pending=record.pending),
            tokens_used=record.tokens_used, processing_time=processing, error=record.error, results=results,
        )


def _int(value: Optional[float]) -> Optional[int]:
    return int(value) if value is not None else None
