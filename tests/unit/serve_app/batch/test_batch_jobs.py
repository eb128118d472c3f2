"""Batch job logic in-process: order, ownership, cancel, queueing, interruption, expiry, overload retry.
The per-key bounds (RPM, unfinished jobs, result bytes, the key looked up per item, listing) are in
test_batch_jobs_bounds.py.

The item runner is a stand-in here (logic only); the real models run the jobs in
tests/integration/test_batch_jobs.py and tests/integration/security/test_batch_jobs_access.py.
Both store implementations are used; Redis when scripts/test.sh provides one.
"""

import asyncio

import pytest

from core.errors import InvalidRequest, JobNotFound, KeyRevoked, Overloaded
from core.settings import Settings
from core.types import GenerationResult, Usage
from deployments.config import load_models_file
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.batch import service as batch_module
from serve_app.batch.job_common import STALE_BEATS, new_job_id
from serve_app.batch.service import BatchService, prepare
from serve_app.generation import Generation
from serve_app.model_router import ModelEntry
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.protocol.batch import BatchRequest
from serve_app.state.batch_job_records import JobRecord, JobRecords
from serve_app.state.store import MemoryStore
from tests import ROOT
from tests.unit.batch_jobs_support import ADMIN, OTHER, OWNER, Runner, _body, _key, _service, _submit, _until
from tests.unit.stores import store_params


@pytest.fixture(params=list(store_params()))
def make_store(request):
    return request.param


def test_job_results_in_item_order_with_item_errors_and_counts(make_store):
    async def scenario():
        service = _service(make_store(), Runner())
        owner = await _key(service)
        body = BatchRequest(items=[{"id": "a", "prompt": "x"}, {"id": "bad", "prompt": "x", "temperature": 9},
                                   {"id": "a", "prompt": "dup"}, {"id": "c", "messages": [{"role": "user", "content": "hi"}]}])
        accepted = await _submit(service, body, owner)
        assert accepted.status == "queued" and accepted.results is None and accepted.counts.pending == 4
        assert accepted.status_url == f"/api/v1/generate/batch/jobs/{accepted.id}"
        await service.jobs[accepted.id].task
        job = await service.get(accepted.id, owner)
        assert job.status == "completed" and job.finished_at is not None and job.expires_at > job.created_at
        assert [(r.index, r.id, r.status) for r in job.results] == [
            (0, "a", "ok"), (1, "bad", "error"), (2, "a", "error"), (3, "c", "ok")]
        assert job.results[1].error["param"] == "temperature" and job.results[2].error["param"] == "id"
        assert job.counts.model_dump() == {"items": 4, "succeeded": 2, "failed": 2, "cancelled": 0, "pending": 0}
        assert job.tokens_used == 6
        assert (await service.get(accepted.id, owner, with_results=False)).results is None
    asyncio.run(scenario())


def test_only_the_owner_and_admins_see_a_job(make_store):
    async def scenario():
        service = _service(make_store(), Runner())
        owner = await _key(service)
        job = await _submit(service, _body(1), owner)
        await service.jobs[job.id].task
        for who, call in ((OTHER, service.get), (OTHER, service.cancel)):
            with pytest.raises(JobNotFound):
                await call(job.id, who)
        assert (await service.get(job.id, ADMIN)).status == "completed"
        for bad in ("bjob_" + "0" * 24, "../../etc", "bjob_x"):
            with pytest.raises(JobNotFound):
                await service.get(bad, owner)
    asyncio.run(scenario())


def test_too_many_items_is_refused_before_anything_runs(make_store):
    async def scenario():
        runner = Runner()
        service = _service(make_store(), runner, batch_job_max_items=3)
        owner = await _key(service)
        with pytest.raises(InvalidRequest) as refused:
            await _submit(service, _body(4), owner)
        assert refused.value.code == "too_many_items" and not service.jobs and not runner.started
    asyncio.run(scenario())


def test_cancel_stops_running_items_and_never_starts_the_rest(make_store):
    async def scenario():
        runner = Runner(hold=True)
        service = _service(make_store(), runner)
        owner = await _key(service)
        job = await _submit(service, _body(6), owner)
        await _until(lambda: len(runner.started) == 2)  # batch_concurrency
        done = await service.cancel(job.id, owner)
        assert done.status == "cancelled" and done.cancel_requested
        assert sorted(runner.cancelled) == [0, 1] and sorted(runner.started) == [0, 1]
        assert [r.error["code"] for r in done.results] == ["cancelled"] * 6
        assert [r.error["message"].endswith("while this item ran") for r in done.results] == [True] * 2 + [False] * 4
        assert done.counts.cancelled == 6 and done.counts.pending == 0
        again = await service.cancel(job.id, owner)  # a final job stays as it is
        assert again.status == "cancelled"
    asyncio.run(scenario())


def test_a_second_job_waits_queued_and_can_be_cancelled_there(make_store):
    async def scenario():
        runner = Runner(hold=True)
        service = _service(make_store(), runner)  # one job at a time per replica
        owner = await _key(service)
        first = await _submit(service, _body(1), owner)
        second = await _submit(service, BatchRequest(items=[{"id": "z", "prompt": "x"}, {"id": "bad", "prompt": ""}]), owner)
        await _until(lambda: runner.started == [0])
        assert (await service.get(first.id, owner)).status == "running"
        assert (await service.get(second.id, owner)).status == "queued"
        cancelled = await service.cancel(second.id, owner)
        assert cancelled.status == "cancelled" and cancelled.started_at is None
        assert [r.error["code"] for r in cancelled.results] == ["cancelled", "invalid_value"]  # its own error kept
        runner.release.set()
        await service.jobs[first.id].task
        assert (await service.get(first.id, owner)).status == "completed"
    asyncio.run(scenario())


def test_cancel_through_another_replica_reaches_the_runner(make_store):
    async def scenario():
        store = make_store()
        runner = Runner(hold=True)
        running_here, other_replica = _service(store, runner), _service(store, Runner())
        owner = await _key(running_here)
        job = await _submit(running_here, _body(3), owner)
        await _until(lambda: len(runner.started) == 2)
        assert (await other_replica.get(job.id, owner)).status == "running"
        done = await other_replica.cancel(job.id, owner)  # waits while the runner's watcher acts
        assert done.status == "cancelled" and done.counts.cancelled == 3
        assert sorted(runner.cancelled) == [0, 1]
    asyncio.run(scenario())


def test_replica_shutdown_fails_its_jobs_as_interrupted_keeping_finished_results(make_store):
    async def scenario():
        runner = Runner(hold={1, 2})
        service = _service(make_store(), runner, batch_concurrency=1)
        owner = await _key(service)
        job = await _submit(service, _body(3), owner)
        await _until(lambda: runner.started == [0, 1])  # item 0 answered, item 1 generating
        await service.shutdown()
        view = await service.get(job.id, owner)
        assert view.status == "failed" and view.error["code"] == "job_interrupted"
        assert [(r.index, r.status) for r in view.results] == [(0, "ok")]
        assert view.counts.succeeded == 1 and view.counts.pending == 2 and runner.cancelled == [1]
    asyncio.run(scenario())


def test_a_silent_runner_is_detected_and_its_job_marked_interrupted(make_store):
    async def scenario():
        store = make_store()
        now = [1_000_000.0]
        service = _service(store, Runner(), clock=lambda: now[0])
        records = JobRecords(store, 60)
        record = JobRecord(id="bjob_" + "a" * 24, owner=OWNER.key_id, status="running", items=5,
                           created_at=now[0], started_at=now[0], runner="gone", heartbeat_at=now[0], succeeded=2)
        await records.create(record)
        now[0] += STALE_BEATS * 0.2 - 0.01  # within the allowed silence
        assert (await service.get(record.id, OWNER)).status == "running"
        now[0] += 0.1
        view = await service.get(record.id, OWNER)
        assert view.status == "failed" and view.error["code"] == "job_interrupted"
        assert view.counts.pending == 3 and "3 items did not run" in view.error["message"]
        assert (await records.load(record.id)).status == "failed"  # written: every replica now says so
    asyncio.run(scenario())


def test_jobs_expire_after_the_ttl(make_store):
    async def scenario():
        service = _service(make_store(), Runner(), batch_job_ttl_s=1)
        owner = await _key(service)
        job = await _submit(service, _body(1), owner)
        await service.jobs[job.id].task
        assert (await service.get(job.id, owner)).status == "completed"
        await asyncio.sleep(1.3)
        with pytest.raises(JobNotFound):
            await service.get(job.id, owner)
    asyncio.run(scenario())


class _OverloadedThenOk:
    """GenerationService stand-in: refuses twice for overload, then answers from a replayed result."""

    def __init__(self):
        config = next(iter(load_models_file(ROOT / "models.json").models.values()))
        self.entry = ModelEntry("m", config, None)
        self.calls = 0

    async def start(self, admission, model, request_id, sampling, **kwargs):
        await admission.limit(model)
        self.calls += 1
        if self.calls <= 2:
            raise Overloaded("busy", retry_after_s=7)
        return Generation.replay(self.entry, GenerationResult("hello", "stop", Usage(2, 1)))


def test_items_of_a_job_wait_out_overload_while_the_sync_batch_reports_it(monkeypatch):
    monkeypatch.setattr(batch_module, "MAX_OVERLOAD_WAIT_S", 0)

    async def scenario():
        (entry,) = prepare([{"id": "a", "prompt": "x"}], None)
        service = _OverloadedThenOk()
        store = MemoryStore()
        pipeline = Pipeline(None, RateLimiter(store, 0, 0), KeyService(store, {}))
        batch = BatchService(service, Settings(), pipeline)
        admitted = []

        async def admit():  # the item's admission, as the route's and the job's look the key up again
            admitted.append(Admission(pipeline, RequestContext("batch", None, None), OWNER))
            return admitted[-1]

        sync = await batch.generate(entry, admit)
        assert sync.status == "error" and sync.error["type"] == "overloaded_error"
        service.calls = 0
        admitted.clear()
        job_item = await batch.generate(entry, admit, retry_overloaded=True)
        assert job_item.status == "ok" and job_item.result.response == "hello" and service.calls == 3
        assert len(admitted) == 3 and all(a.closed for a in admitted)  # each attempt admitted anew, settled
        # every attempt of an item is a request of the key's, settled on its own
        assert (await pipeline.keys.usage("key-a", known=True)).requests == 4
        service.calls = 0
        attempts = []

        async def revoked_after_first():
            if attempts:
                raise KeyRevoked("this API key has been revoked")
            attempts.append(1)
            return Admission(pipeline, RequestContext("batch", None, None), OWNER)

        with pytest.raises(KeyRevoked):  # revoked while the item waited: no second attempt
            await batch.generate(entry, revoked_after_first, retry_overloaded=True)
        assert service.calls == 1
    asyncio.run(scenario())


class _CountingStore(MemoryStore):
    """Counts concurrent writes (the state hub answered 503 when a job's invalid items all wrote at once)."""

    def __init__(self):
        super().__init__()
        self.writing = self.most = 0

    async def hset(self, key, mapping):
        self.writing += 1
        self.most = max(self.most, self.writing)
        try:
            await asyncio.sleep(0.001)  # a round trip: concurrent writes overlap here
            return await super().hset(key, mapping)
        finally:
            self.writing -= 1


def test_progress_writes_of_invalid_items_stay_within_the_concurrency():
    async def scenario():
        store = _CountingStore()
        service = _service(store, Runner(), batch_concurrency=2)
        owner = await _key(service)
        job = await _submit(service, BatchRequest(items=[{"id": f"x{i}"} for i in range(200)]), owner)
        await service.jobs[job.id].task
        done = await service.get(job.id, owner)
        assert done.status == "completed" and done.counts.failed == 200
        assert 1 <= store.most <= 2
    asyncio.run(scenario())


def test_job_ids_sort_by_creation_time():
    ids = [new_job_id(t) for t in (1_000.0, 1_000.001, 2_000_000_000.5)]
    assert ids == sorted(ids) and all(len(i) == 29 for i in ids)
