"""Batch job logic in-process: order, ownership, cancel, queueing, interruption, expiry, overload retry,
and the per-key bounds: RPM on submission, unfinished jobs, result bytes, the key looked up per item, listing.

The item runner is a stand-in here (logic only); the real models run the jobs in
tests/integration/test_batch_jobs.py and tests/integration/security/test_batch_jobs_access.py.
Both store implementations are used; Redis when scripts/test.sh provides one.
"""

import asyncio
from pathlib import Path

import pytest

from deployments.config import load_models_file
from core.access_errors import KeyRevoked, RateLimited
from core.errors import InvalidRequest, Overloaded
from core.types import GenerationResult, Usage
from serve_app.integrations import batch as batch_module
from serve_app.access.auth import Principal
from serve_app.integrations.batch import BatchService, prepare
from serve_app.state.batch_job_records import JobRecord, JobRecords
from serve_app.integrations.batch_jobs import (
    STALE_BEATS, BatchJobService, JobNotFound, ResultQuotaExceeded, TooManyBatchJobs, new_job_id,
)
from serve_app.access.keys import KeyService
from serve_app.http.protocol.keys import KeyCreate, KeyUpdate
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.http.protocol.api_v1 import GenerateResponse
from serve_app.http.protocol.batch import BatchItemResult, BatchRequest
from serve_app.generation import Generation
from serve_app.model_router import ModelEntry
from core.settings import Settings
from serve_app.access.ratelimit import RateLimiter
from serve_app.state.store import MemoryStore
from tests.unit.stores import store_params

ROOT = Path(__file__).resolve().parent.parent.parent
OWNER = Principal(key_id="key-a", scopes=frozenset({"inference"}))
OTHER = Principal(key_id="key-b", scopes=frozenset({"inference"}))
ADMIN = Principal(key_id="key-admin", scopes=frozenset({"inference", "admin"}))
BOOT = Principal(key_id="boot-123456789abc", bootstrap=True)


@pytest.fixture(params=list(store_params()))
def make_store(request):
    return request.param


class Runner:
    """Stands in for BatchService.generate: answers `r<index>`, or holds items until released."""

    def __init__(self, hold=False, text=""):
        self.hold = hold  # True: every item; a set: those indices
        self.text = text  # added to each answer (its stored size)
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.callers: list = []
        self.pipeline = None  # set by _service: the admissions and the key service of the jobs

    async def generate(self, entry, caller, retry_overloaded=False, refresh=None):
        assert retry_overloaded  # jobs wait out overload instead of failing items
        self.started.append(entry.index)
        self.callers.append(caller)
        try:
            if self.hold is True or (self.hold and entry.index in self.hold):
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(entry.index)
            raise
        return BatchItemResult(index=entry.index, id=entry.id, status="ok", result=GenerateResponse(
            response=f"r{entry.index}{self.text}", model="m", tokens_used=3, processing_time=0.1, timestamp="t"))


def _service(store, runner, clock=None, **settings) -> BatchJobService:
    """A job service over `store`; its keys (looked up for every item) live in the same store."""
    values = {"batch_concurrency": 2, "batch_jobs_per_replica": 1, "batch_job_heartbeat_s": 0.2, **settings}
    extra = {"clock": clock} if clock else {}
    runner.pipeline = runner.pipeline or Pipeline(None, RateLimiter(store, 0, 0), KeyService(store, {"m"}))
    return BatchJobService(runner, store, Settings(**values), **extra)


async def _key(service: BatchJobService, **fields) -> Principal:
    """A stored key (as an admin makes one), as the pipeline admits it."""
    created = await service.pipeline.keys.create(KeyCreate(name="unit", **fields))
    return Principal.from_record(created)


async def _submit(service: BatchJobService, body: BatchRequest, principal: Principal, ip=None):
    """As the route does: the request's admission (its limits not taken yet) submits the job."""
    return await service.submit(body, Admission(service.pipeline, RequestContext("http", None, ip), principal))


def _body(n: int, **item) -> BatchRequest:
    return BatchRequest(items=[{"id": f"m{i}", "prompt": f"p{i}", **item} for i in range(n)])


async def _until(condition, polls: int = 500):
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


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
            raise Overloaded("busy", retry_after=7)
        return Generation.replay(self.entry, GenerationResult("hello", "stop", Usage(2, 1)))


def test_items_of_a_job_wait_out_overload_while_the_sync_batch_reports_it(monkeypatch):
    monkeypatch.setattr(batch_module, "MAX_OVERLOAD_WAIT_S", 0)

    async def scenario():
        (entry,) = prepare([{"id": "a", "prompt": "x"}], None)
        service = _OverloadedThenOk()
        store = MemoryStore()
        pipeline = Pipeline(None, RateLimiter(store, 0, 0), KeyService(store, {}))
        caller = Admission(pipeline, RequestContext("http", None, None), OWNER)
        batch = BatchService(service, Settings(), pipeline)
        sync = await batch.generate(entry, caller)
        assert sync.status == "error" and sync.error["type"] == "overloaded_error"
        service.calls = 0
        refreshed = []

        async def refresh():  # a job looks its key up again before every attempt after the first
            refreshed.append(1)
            return caller

        job_item = await batch.generate(entry, caller, retry_overloaded=True, refresh=refresh)
        assert job_item.status == "ok" and job_item.result.response == "hello" and service.calls == 3
        assert len(refreshed) == 2
        # every attempt of an item is a request of the key's (the batch call itself is not)
        assert (await pipeline.keys.usage("key-a", known=True)).requests == 4 and caller.delegated
        service.calls = 0

        async def revoked():
            raise KeyRevoked("this API key has been revoked")

        with pytest.raises(KeyRevoked):  # revoked while the item waited: no second attempt
            await batch.generate(entry, caller, retry_overloaded=True, refresh=revoked)
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


# -- charged and bounded (docs/security.md, "Batch jobs") ---------------------------------------

def _invalid(n: int) -> BatchRequest:
    """Items that never run (no prompt): a submission then counts only itself."""
    return BatchRequest(items=[{"id": f"x{i}"} for i in range(n)])


def test_a_submission_is_one_request_against_the_keys_rpm(make_store):
    async def scenario():
        service = _service(make_store(), Runner())
        owner = await _key(service, rate_limit_per_minute=2)
        for _ in range(2):
            await _submit(service, _invalid(3), owner)
        with pytest.raises(RateLimited) as refused:
            await _submit(service, _invalid(3), owner)
        assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
        assert len(service.jobs) <= 2 and len(await service.records.listed(owner.key_id)) == 2
    asyncio.run(scenario())


def test_unfinished_jobs_per_key_are_capped_across_replicas(make_store):
    async def scenario():
        store = make_store()
        runner = Runner(hold=True)
        here, there = _service(store, runner, batch_jobs_per_key=2), _service(store, Runner(hold=True), batch_jobs_per_key=2)
        owner, other = await _key(here), await _key(here)
        first = await _submit(here, _body(1), owner)
        await _submit(there, _body(1), owner)  # another ingress replica: the count is in the store
        for service in (here, there):
            with pytest.raises(TooManyBatchJobs) as refused:
                await _submit(service, _body(1), owner)
            assert refused.value.status == 429 and refused.value.code == "too_many_batch_jobs"
        assert len(await here.records.listed(owner.key_id)) == 2  # the refused ones left nothing
        await _submit(here, _body(1), other)  # per key
        await here.cancel(first.id, owner)  # a finished job frees its place
        third = await _submit(there, _body(1), owner)
        assert third.status == "queued"
        boot = [await _submit(here, _body(1), BOOT) for _ in range(3)]  # bootstrap keys: no cap
        assert len(boot) == 3
        for service in (here, there):
            await service.shutdown()
    asyncio.run(scenario())


def test_a_dead_replicas_job_stops_counting_against_the_cap(make_store):
    async def scenario():
        store = make_store()
        now = [1_000_000.0]
        service = _service(store, Runner(), clock=lambda: now[0], batch_jobs_per_key=1)
        owner = await _key(service)
        records = JobRecords(store, 60)
        lost = JobRecord(id=new_job_id(now[0]), owner=owner.key_id, status="running", items=5, created_at=now[0],
                         started_at=now[0], runner="gone", heartbeat_at=now[0])
        await records.create(lost)
        await records.activate(owner.key_id, lost.id)
        with pytest.raises(TooManyBatchJobs):
            await _submit(service, _body(1), owner)
        now[0] += STALE_BEATS * 0.2 + 1  # its replica has been silent for too long
        job = await _submit(service, _body(1), owner)
        assert (await records.load(lost.id)).status == "failed"
        await service.jobs[job.id].task
    asyncio.run(scenario())


def test_a_long_item_id_refuses_the_job_and_is_never_echoed(make_store):
    async def scenario():
        runner = Runner()
        service = _service(make_store(), runner)
        owner = await _key(service)
        body = BatchRequest(items=[{"id": "a", "prompt": "x"}, {"id": "i" * 129, "prompt": "x"}])
        with pytest.raises(InvalidRequest) as refused:
            await _submit(service, body, owner)
        assert refused.value.param == "items.1.id" and not service.jobs and not runner.started
        assert await service.records.listed(owner.key_id) == []
    asyncio.run(scenario())
    # the synchronous batch, and any item's error: a bounded echo of what was sent
    (long_id, odd_type, extra) = prepare([{"id": "i" * 5000, "prompt": "x"}, {"id": "t", "type": "t" * 5000},
                                          {"id": "e", "prompt": "x", "k" * 5000: 1}], None)
    assert long_id.failed(long_id.error).id is None
    for entry in (odd_type, extra):
        error = entry.failed(entry.error).error
        assert len(error["message"]) <= 512 and len(error["param"] or "") <= 128


@pytest.mark.parametrize("change, code", [
    ("revoke", "key_revoked"), ({"enabled": False}, "key_disabled"), ({"expires_at": 1}, "key_expired"),
    ({"scopes": ["admin"]}, "insufficient_scope"), ({"ip_allowlist": ["10.0.0.0/8"]}, "ip_not_allowed"),
])
def test_a_key_changed_while_its_job_runs_stops_it_at_the_next_item(change, code):
    async def scenario():
        runner = Runner(hold={0})
        service = _service(MemoryStore(), runner, batch_concurrency=1)
        owner = await _key(service, models=["m"])
        job = await _submit(service, _body(5), owner, ip="192.0.2.7")
        await _until(lambda: runner.started == [0])
        assert runner.callers[0].principal.models == frozenset({"m"})  # the key as looked up for the item
        if change == "revoke":
            await service.pipeline.keys.revoke(owner.key_id)
        else:
            await service.pipeline.keys.update(owner.key_id, KeyUpdate(**change))
        runner.release.set()  # item 0 finishes; item 1 looks the key up and stops the job
        await service.jobs[job.id].task
        view = await service.get(job.id, ADMIN)
        assert view.status == "cancelled" and not view.cancel_requested
        assert view.error["code"] == code and view.error["message"].startswith("the job was stopped: ")
        assert runner.started == [0] and view.results[0].status == "ok"
        assert [r.error["code"] for r in view.results[1:]] == ["cancelled"] * 4
        assert view.results[1].error["message"] == f"the job was stopped ({code}) before this item ran"
        assert view.counts.succeeded == 1 and view.counts.cancelled == 4 and view.counts.pending == 0
        assert await service.records.activate(owner.key_id, "probe") == {"probe"}  # it left the unfinished jobs
    asyncio.run(scenario())


def test_nothing_of_the_key_is_kept_from_the_submission():
    async def scenario():
        runner = Runner(hold={0})
        service = _service(MemoryStore(), runner, batch_concurrency=1)
        owner = await _key(service, models=["m"])
        job = await _submit(service, _body(2), owner)
        await _until(lambda: runner.started == [0])
        await service.pipeline.keys.update(owner.key_id, KeyUpdate(models=None))  # now every model
        runner.release.set()
        await service.jobs[job.id].task
        assert runner.callers[0].principal.models == frozenset({"m"}) and runner.callers[1].principal.models is None
    asyncio.run(scenario())


def test_result_bytes_per_key_are_bounded(make_store):
    async def scenario():
        runner = Runner(text="x" * 300)  # each stored result: about 400 bytes
        service = _service(make_store(), runner, batch_concurrency=1, batch_job_result_bytes_per_key=2048)
        owner = await _key(service)
        job = await _submit(service, _body(20), owner)
        await service.jobs[job.id].task
        view = await service.get(job.id, owner)
        assert view.status == "failed" and view.error["code"] == "batch_result_quota_exceeded"
        assert 4 <= view.counts.succeeded <= 6 and view.counts.pending == 20 - view.counts.succeeded
        assert len(runner.started) == view.counts.succeeded  # the rest never ran
        with pytest.raises(ResultQuotaExceeded) as refused:
            await _submit(service, _body(1), owner)
        assert refused.value.status == 429 and refused.value.code == "batch_result_quota_exceeded"
        assert int(refused.value.headers["Retry-After"]) > 0
        other = await _key(service)
        await _submit(service, _body(1), other)  # per key
        await _submit(service, _body(1), BOOT)  # bootstrap keys: no quota
        await service.shutdown()
    asyncio.run(scenario())


def test_admins_list_every_job_by_owner_and_status_keys_their_own(make_store):
    async def scenario():
        runner = Runner(hold={0})
        service = _service(make_store(), runner)
        first, second = await _key(service), await _key(service)
        running = await _submit(service, _body(1), first)
        await _until(lambda: runner.started == [0])
        done = [await _submit(service, _invalid(1), second) for _ in range(3)]  # queued behind the held one
        mine = {running.id} | {j.id for j in done}  # a shared Redis may hold other tests' jobs too

        async def admin_sees(**filters) -> list[str]:
            return [j.id for j in (await service.list(ADMIN, limit=100, **filters)).data if j.id in mine]

        listed = await service.list(ADMIN, limit=100)
        assert await admin_sees() == [j.id for j in reversed(done)] + [running.id]  # newest first
        assert all(j.results is None for j in listed.data)
        assert next(j for j in listed.data if j.id == running.id).owner == first.key_id
        assert [j.id for j in (await service.list(ADMIN, owner=first.key_id)).data] == [running.id]
        assert await admin_sees(status="running") == [running.id]
        assert len(await admin_sees(status="queued")) == 3
        page = await service.list(ADMIN, owner=second.key_id, limit=2)
        assert page.has_more and page.last_id == page.data[-1].id and len(page.data) == 2
        rest = await service.list(ADMIN, owner=second.key_id, limit=2, after=page.last_id)
        assert not rest.has_more and [j.id for j in page.data + rest.data] == [j.id for j in reversed(done)]
        own = await service.list(first)
        assert [j.id for j in own.data] == [running.id]
        assert (await service.list(first, owner=second.key_id)).data == []  # another key's: nothing
        assert [j.id for j in (await service.list(second, status="running")).data] == []
        runner.release.set()
        for job in list(service.jobs.values()):
            await job.task
        assert len(await admin_sees(status="completed")) == 4
        await service.cancel(running.id, ADMIN)  # admins may cancel any job (final: unchanged)
    asyncio.run(scenario())


def test_results_expire_with_the_job_and_it_leaves_the_listing(make_store):
    async def scenario():
        service = _service(make_store(), Runner(), batch_job_ttl_s=1, batch_job_heartbeat_s=0.05)
        owner = await _key(service)
        job = await _submit(service, _body(2), owner)
        await service.jobs[job.id].task
        assert len(await service.records.results(job.id)) == 2 and (await service.list(owner)).data
        await asyncio.sleep(1.3 + STALE_BEATS * 0.05)
        assert await service.records.results(job.id) == [] and await service.records.load(job.id) is None
        assert (await service.list(owner)).data == []
        assert job.id not in {j.id for j in (await service.list(ADMIN, limit=100)).data}
    asyncio.run(scenario())


def test_job_ids_sort_by_creation_time():
    ids = [new_job_id(t) for t in (1_000.0, 1_000.001, 2_000_000_000.5)]
    assert ids == sorted(ids) and all(len(i) == 29 for i in ids)
