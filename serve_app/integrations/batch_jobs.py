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
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from core.errors import AICoreError, InvalidRequest, RequestCancelled
from serve_app.integrations.batch import BatchService, Prepared, prepare
from serve_app.state.batch_job_records import JobRecord, JobRecords
from serve_app.http.protocol.batch import BatchItemResult, BatchRequest
from serve_app.http.protocol.batch_jobs import JOB_ID_PATTERN, TERMINAL, BatchJob, BatchJobCounts
from core.settings import Settings
from serve_app.state.store import Store, StoreUnavailable

logger = logging.getLogger("aicore.batch_jobs")

JOBS_PATH = "/api/v1/generate/batch/jobs"
CANCEL_POLL_S = 0.5  # how often a runner reads its jobs' records for a cancel request
CANCEL_WAIT_S = 5.0  # how long a cancel call waits for the job to reach its final state
STALE_BEATS = 6  # heartbeats missed before a job counts as interrupted


class JobNotFound(AICoreError):
    """No such job, or one this key may not see (the same answer: ids are not confirmed to others)."""

    status, type, code = 404, "invalid_request_error", "batch_job_not_found"


@dataclass(eq=False)
class LocalJob:
    """A job this replica runs: its items, the caller, the results so far, its task."""

    record: JobRecord
    entries: list[Prepared]
    caller: Any  # the submitting request's Admission: each item is admitted as a part of it
    results: dict[int, BatchItemResult] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # items whose generation began
    task: Optional[asyncio.Task] = None
    stop_reason: Optional[str] = None  # "cancelled" or "interrupted"
    finishing: bool = False

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and not self.finishing and self.task is not None:
            self.stop_reason = reason
            self.task.cancel()


class BatchJobService:
    def __init__(self, batch: BatchService, store: Store, settings: Settings,
                 clock: Callable[[], float] = time.time):
        self.batch = batch
        self.settings = settings
        self.records = JobRecords(store, settings.batch_job_ttl_s)
        self.clock = clock
        self.runner_id = uuid.uuid4().hex[:12]
        self.jobs: dict[str, LocalJob] = {}
        self._slots = asyncio.Semaphore(settings.batch_jobs_per_replica)
        self._watcher: Optional[asyncio.Task] = None
        self._beat_at = 0.0

    # -- the three calls of the HTTP API --------------------------------------------------

    async def submit(self, body: BatchRequest, caller: Any) -> BatchJob:
        limit = self.settings.batch_job_max_items
        if len(body.items) > limit:
            raise InvalidRequest(f"{len(body.items)} items; a batch job takes at most {limit}",
                                 param="items", code="too_many_items")
        now = self.clock()
        record = JobRecord(id="bjob_" + uuid.uuid4().hex[:24], owner=caller.key_id, status="queued",
                           items=len(body.items), created_at=now, runner=self.runner_id, heartbeat_at=now)
        await self.records.create(record)  # the store is down: 503 before anything is accepted
        job = LocalJob(record, prepare(body.items, body.format), caller)
        self.jobs[record.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"batch-job-{record.id}")
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="batch-job-watcher")
        return self.view(record, None, self.settings.batch_job_ttl_s)

    async def get(self, job_id: str, principal: Any, with_results: bool = True) -> BatchJob:
        record = await self._owned(job_id, principal)
        results = await self.records.results(job_id) if with_results else None
        return self.view(record, results, await self.records.expires_in(job_id))

    async def cancel(self, job_id: str, principal: Any) -> BatchJob:
        record = await self._owned(job_id, principal)
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
        if record is None or (record.owner != principal.key_id and "admin" not in principal.scopes):
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
                                              "error": _json(record.error)})
        return record

    def view(self, record: JobRecord, results: Optional[list[BatchItemResult]], expires_in: Optional[float]) -> BatchJob:
        processing = None
        if record.started_at is not None and record.finished_at is not None:
            processing = round(max(0.0, record.finished_at - record.started_at), 4)
        return BatchJob(
            id=record.id, status=record.status, status_url=f"{JOBS_PATH}/{record.id}",
            created_at=int(record.created_at), started_at=_int(record.started_at),
            finished_at=_int(record.finished_at),
            expires_at=int(self.clock() + expires_in) if expires_in is not None else None,
            cancel_requested=record.cancel_requested,
            counts=BatchJobCounts(items=record.items, succeeded=record.succeeded, failed=record.failed,
                                  cancelled=record.cancelled, pending=record.pending),
            tokens_used=record.tokens_used, processing_time=processing, error=record.error, results=results,
        )

    # -- running ---------------------------------------------------------------------------

    async def _run(self, job: LocalJob) -> None:
        status = "completed"
        try:
            async with self._slots:
                job.record.status, job.record.started_at = "running", self.clock()
                await self._save(job.record.id, {"status": "running", "started_at": str(job.record.started_at)})
                gate = asyncio.Semaphore(self.settings.batch_concurrency)  # FIFO: items start in order
                items = [asyncio.create_task(self._item(job, entry, gate)) for entry in job.entries]
                try:
                    await asyncio.gather(*items)
                finally:  # a cancel (or a bug in one item) stops every item still running
                    for task in items:
                        task.cancel()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # handled: the final writes below must not be cancelled
            status = "failed" if job.stop_reason == "interrupted" else "cancelled"
        except Exception:  # a bug, not an item's error (those are results): the job fails, loudly
            logger.exception("batch job %s failed", job.record.id)
            status = "failed"
        job.finishing = True
        try:
            await self._finish(job, status)
        finally:
            self.jobs.pop(job.record.id, None)

    async def _item(self, job: LocalJob, entry: Prepared, gate: asyncio.Semaphore) -> None:
        # The gate also bounds the progress writes: a thousand invalid items written at once
        # overran the shared state hub (found by tests/integration/test_openapi_fuzz.py).
        async with gate:
            if entry.error is not None:
                result = entry.failed(entry.error)
            else:
                job.started.add(entry.index)
                result = await self.batch.generate(entry, job.caller, retry_overloaded=True)
            job.results[entry.index] = result
            job.record.count(job.results)
            try:  # progress for pollers; the final write repeats everything
                await self.records.put_results(job.record.id, {entry.index: result})
                await self.records.update(job.record.id, job.record.counts_hash())
            except StoreUnavailable:
                logger.warning("batch job %s: progress not written (store unavailable)", job.record.id)

    async def _finish(self, job: LocalJob, status: str) -> None:
        record = job.record
        for entry in job.entries:
            if entry.index in job.results:
                continue
            if entry.error is not None:  # an invalid item's result is its own error, whatever happened
                job.results[entry.index] = entry.failed(entry.error)
            elif status == "cancelled":
                when = "while this item ran" if entry.index in job.started else "before this item ran"
                job.results[entry.index] = entry.failed(RequestCancelled(f"the job was cancelled {when}"))
        record.count(job.results)
        record.status, record.finished_at = status, self.clock()
        values = {"status": status, "finished_at": str(record.finished_at), **record.counts_hash()}
        if status == "failed":
            record.error = (interrupted_error(record.pending) if job.stop_reason == "interrupted"
                            else {"message": "the job failed; see the server log", "type": "server_error",
                                  "param": None, "code": "job_failed"})
            values["error"] = _json(record.error)
        try:
            await self.records.put_results(record.id, job.results)
            await self._save(record.id, values)
        except StoreUnavailable:
            logger.error("batch job %s ended %s but the store is unavailable: it will read as interrupted",
                         record.id, status)
        logger.info("batch job %s %s: %d ok, %d failed, %d cancelled, %d not run", record.id, status,
                    record.succeeded, record.failed, record.cancelled, record.pending)

    async def _save(self, job_id: str, values: dict[str, str]) -> None:
        await self.records.update(job_id, values)

    async def _watch(self) -> None:
        """While this replica runs jobs: pick up cancel requests, keep the heartbeats fresh."""
        while self.jobs:
            await asyncio.sleep(CANCEL_POLL_S)
            now = self.clock()
            beat = now - self._beat_at >= self.settings.batch_job_heartbeat_s
            for job in list(self.jobs.values()):
                try:
                    current = await self.records.load(job.record.id)
                    if current is not None and current.cancel_requested:
                        job.stop("cancelled")
                    if beat:
                        await self.records.touch(job.record.id, now)
                except StoreUnavailable:
                    logger.warning("batch job %s: store unavailable for the heartbeat", job.record.id)
            if beat:
                self._beat_at = now


def interrupted_error(not_run: int) -> dict:
    return {"message": f"the ingress replica running this job stopped; {not_run} items did not run: "
                       "submit them again", "type": "server_error", "param": None, "code": "job_interrupted"}


def _json(value: dict) -> str:
    import json

    return json.dumps(value)


def _int(value: Optional[float]) -> Optional[int]:
    return int(value) if value is not None else None
