"""Which priority reaches the model: the request's own, else its key's default, else interactive;
batch items default to batch. Routing logic only: a stand-in model handle records the requests
(the engine's handling of priorities is tested on real weights in tests/engine)."""

import asyncio
from types import SimpleNamespace

from core.settings import Settings
from core.types import GenerationChunk, SamplingParams, Usage
from deployments.config import load_models_file
from serve_app.access.auth import Principal
from serve_app.batch.service import BatchService
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.pipeline import RequestContext
from serve_app.protocol.batch import BatchRequest
from serve_app.serving import GenerationService
from tests.conftest import ROOT
from tests.unit.admissions import admission, pipeline

MODEL = "smollm2-135m-instruct"


class _Recording:
    def __init__(self):
        self.requests = []

    def options(self, **_):
        return self

    @property
    def stream(self):
        def remote(request):
            self.requests.append(request)

            return _OneChunk()
        return SimpleNamespace(remote=remote)


class _OneChunk:
    """A replica's stream that answers at once: one final chunk."""

    def __init__(self):
        self.done = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.done:
            raise StopAsyncIteration
        self.done = True
        return GenerationChunk(finish_reason="stop", usage=Usage(1, 0))

    def cancel(self):
        self.done = True


def _service(handle) -> GenerationService:
    config = load_models_file(ROOT / "models.json").models[MODEL]
    router = ModelRouter({MODEL: ModelEntry(MODEL, config, handle)}, MODEL)
    return GenerationService(router, Settings(api_keys="k" * 16))


def test_request_priority_then_key_default_then_interactive():
    handle = _Recording()
    service = _service(handle)
    bulk_key = Principal(key_id="email-bot", scopes=frozenset({"inference"}), priority="batch")
    plain_key = Principal(key_id="web", scopes=frozenset({"inference"}))

    async def run():
        for principal, priority in ((plain_key, None), (bulk_key, None), (bulk_key, "interactive"),
                                    (plain_key, "batch")):
            generation = await service.start(admission(principal), MODEL, "r", SamplingParams(max_tokens=1),
                                             prompt="hi", priority=priority)
            await generation.collect()

    asyncio.run(run())
    assert [r.priority for r in handle.requests] == ["interactive", "batch", "interactive", "batch"]


class _Presented:
    """Authenticator stand-in: the key the batch call presented is `principal` (each item looks it up)."""

    def __init__(self, principal: Principal):
        self.principal = principal

    async def check(self, key, client_ip):
        return self.principal


def test_batch_items_default_to_batch_priority():
    handle = _Recording()
    principal = Principal(key_id="web", scopes=frozenset({"inference"}))
    shared = pipeline(auth=_Presented(principal))
    batch = BatchService(_service(handle), Settings(api_keys="k" * 16), shared)
    items = [{"id": "a", "prompt": "hi", "max_tokens": 1}, {"id": "b", "prompt": "hi", "max_tokens": 1,
                                                           "priority": "interactive"}]
    asyncio.run(batch.run(BatchRequest(items=items), RequestContext("http", "the-presented-key", None)))
    assert sorted(r.priority for r in handle.requests) == ["batch", "interactive"]
