"""Running a batch job in this replica: its items under the key as it stands now, the progress
and final writes, and the watcher that picks up cancel requests and keeps the heartbeats fresh."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from core.errors import AICoreError, RequestCancelled, ResultQuotaExceeded, StoreUnavailable
from core.settings import Settings
from serve_app.batch.job_common import (
    CANCEL_POLL_S,
    LocalJob,
    interrupted_error,
    stopped_error,
    to_json,
)
from serve_app.batch.service import BatchService, Prepared
from serve_app.pipeline import Admission, Outcome, Pipeline, RequestContext
from serve_app.protocol.batch import BatchItemResult
from serve_app.state.batch_job_records import JobRecord, JobRecords

logger = logging.getLogger("aicore.batch_jobs")


class BatchJobRunner:
    """The running half of BatchJobService, which sets these attributes and `_ended`."""

    batch: BatchService
    pipeline: Pipeline
    settings: Settings
    records: JobRecords
    clock: Callable[[], float]
    jobs: dict[str, LocalJob]
    _slots: asyncio.Semaphore
    _beat_at: float

    async def _ended(self, record: JobRecord) -> None:
        raise NotImplementedError

    async def _run(self, job: LocalJob) -> None:
        job.entered = True
        status = "completed"
        try:
            if job.stop_reason is not None:  # stopped before its task began
                raise asyncio.CancelledError
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
            status = "cancelled" if job.stop_reason in (None, "cancelled") else "failed"
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
            try:  # the key as it stands now, before every item (and each retry of an overloaded one)
                if entry.error is not None:
                    await self.pipeline.check(self._context(job), "inference", known=job.principal)
                    result = entry.failed(entry.error)
                else:
                    result = await self.batch.generate(entry, lambda: self._admit(job, entry), retry_overloaded=True)
            except StoreUnavailable as error:  # the key cannot be checked: the item does not run
                result = entry.failed(entry.error or error)
            except AICoreError as refused:  # revoked, disabled, expired, gone, scope or address lost
                job.stop("cancelled", stopped_error(refused))
                return
            job.results[entry.index] = result
            job.record.count(job.results)
            try:  # progress for pollers; the final write repeats everything
                await self.records.put_results(job.record.id, {entry.index: result})
                await self.records.update(job.record.id, job.record.counts_hash())
            except StoreUnavailable:
                logger.warning("batch job %s: progress not written (store unavailable)", job.record.id)
            await self._charge(job, result)

    async def _admit(self, job: LocalJob, entry: Prepared) -> Admission:
        """The item's admission under the key as it is now (looked up by id: nothing of it is kept
        from the submission but its id); a refusal stops the job."""
        admission = await self.pipeline.admit(self._context(job), "inference", known=job.principal)
        job.started.add(entry.index)
        return admission

    @staticmethod
    def _context(job: LocalJob) -> RequestContext:
        return RequestContext("batch", None, job.client_ip, Outcome(client_ip=job.client_ip))

    async def _charge(self, job: LocalJob, result: BatchItemResult) -> None:
        """Count the stored result against the key's bytes; past the quota the job ends `failed`."""
        if job.principal.bootstrap:
            return
        quota = self.settings.batch_job_result_bytes_per_key
        try:
            total = await self.records.charge_bytes(job.record.owner, len(result.model_dump_json(exclude_none=True)))
        except StoreUnavailable:
            return
        if total > quota:
            job.stop("quota", {
                "message": f"this key's batch jobs stored {total} bytes of results in this window (at most {quota}, "
                           "BATCH_JOB_RESULT_BYTES_PER_KEY): the items without a result did not run; submit them "
                           "again later", "type": "requests", "param": None, "code": ResultQuotaExceeded.code})

    async def _finish(self, job: LocalJob, status: str) -> None:
        record = job.record
        stopped = f"stopped ({job.stop_error['code']})" if job.stop_error else "cancelled"
        for entry in job.entries:
            if entry.index in job.results:
                continue
            if entry.error is not None:  # an invalid item's result is its own error, whatever happened
                job.results[entry.index] = entry.failed(entry.error)
            elif status == "cancelled":
                when = "while this item ran" if entry.index in job.started else "before this item ran"
                job.results[entry.index] = entry.failed(RequestCancelled(f"the job was {stopped} {when}"))
        record.count(job.results)
        record.status, record.finished_at = status, self.clock()
        values = {"status": status, "finished_at": str(record.finished_at), **record.counts_hash()}
        if job.stop_error is not None:
            record.error = job.stop_error
        elif status == "failed":
            record.error = (interrupted_error(record.pending) if job.stop_reason == "interrupted"
                            else {"message": "the job failed; see the server log", "type": "server_error",
                                  "param": None, "code": "job_failed"})
        if record.error is not None:
            values["error"] = to_json(record.error)
        try:
            await self.records.put_results(record.id, job.results)
            await self._save(record.id, values)
            await self._ended(record)
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
                        await self.records.index(job.record, self._listed_until())
                except StoreUnavailable:
                    logger.warning("batch job %s: store unavailable for the heartbeat", job.record.id)
            if beat:
                self._beat_at = now
