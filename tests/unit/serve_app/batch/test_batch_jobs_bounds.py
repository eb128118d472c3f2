"""Batch jobs charged and bounded, in-process (docs/security.md, "Batch jobs"): RPM on submission,
unfinished jobs per key, result bytes, the key looked up per item, the admins' listing, expiry.
The stand-in runner and the service are in batch_jobs_support.py; both store implementations
are used, Redis when scripts/test.sh provides one.
"""

import asyncio

import pytest

from core.errors import InvalidRequest, PermissionDenied, RateLimited, ResultQuotaExceeded, TooManyBatchJobs
from serve_app.access.auth import Principal
from serve_app.batch.job_common import STALE_BEATS, new_job_id
from serve_app.batch.service import prepare
from serve_app.protocol.batch import BatchRequest
from serve_app.protocol.keys import KeyUpdate
from serve_app.state.batch_job_records import JobRecord, JobRecords
from serve_app.state.store import MemoryStore
from tests.unit.batch_jobs_support import (
    ADMIN,
    BOOT,
    Runner,
    _body,
    _invalid,
    _key,
    _service,
    _submit,
    _until,
)
from tests.unit.stores import store_params


@pytest.fixture(params=list(store_params()))
def make_store(request):
    return request.param


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


def test_admin_read_sees_every_job_and_cancels_none_of_another_keys(make_store):
    async def scenario():
        runner = Runner(hold={0})
        service = _service(make_store(), runner)
        owner = await _key(service)
        viewer = Principal(key_id="key-viewer", scopes=frozenset({"inference", "admin_read"}))
        running = await _submit(service, _body(1), owner)
        await _until(lambda: runner.started == [0])
        assert running.id in [j.id for j in (await service.list(viewer, limit=100)).data]
        assert (await service.get(running.id, viewer)).status == "running"
        with pytest.raises(PermissionDenied, match="'admin'"):
            await service.cancel(running.id, viewer)
        assert (await service.get(running.id, owner)).status == "running"
        assert (await service.cancel(running.id, owner)).status == "cancelled"  # its own key may
        runner.release.set()
        await service.shutdown()
    asyncio.run(scenario())
