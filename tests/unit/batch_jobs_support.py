"""What the batch job unit tests share: principals, a stand-in item runner, a job service over a
store whose keys are looked up for every item, and the calls a route makes."""

import asyncio

from core.settings import Settings
from serve_app.access.auth import Principal
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.batch.jobs import BatchJobService
from serve_app.pipeline import Admission, Pipeline, RequestContext
from serve_app.protocol.api_v1 import GenerateResponse
from serve_app.protocol.batch import BatchItemResult, BatchRequest
from serve_app.protocol.keys import KeyCreate

OWNER = Principal(key_id="key-a", scopes=frozenset({"inference"}))
OTHER = Principal(key_id="key-b", scopes=frozenset({"inference"}))
ADMIN = Principal(key_id="key-admin", scopes=frozenset({"inference", "admin"}))
BOOT = Principal(key_id="boot-123456789abc", bootstrap=True)


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

    async def generate(self, entry, admit, retry_overloaded=False):
        assert retry_overloaded  # jobs wait out overload instead of failing items
        caller = await admit()  # the key looked up again: a refusal is raised to the job
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


def _invalid(n: int) -> BatchRequest:
    """Items that never run (no prompt): a submission then counts only itself."""
    return BatchRequest(items=[{"id": f"x{i}"} for i in range(n)])
