"""Which priority reaches the model: the request's own, else its key's default, else interactive;
batch items default to batch. Routing logic only: a stand-in model handle records the requests
(the engine's handling of priorities is tested on real weights in tests/engine)."""

import asyncio

from core.settings import Settings
from core.types import SamplingParams, Usage
from deployments.config import load_models_file
from serve_app.access.auth import Principal
from serve_app.batch.service import BatchService
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.pipeline import RequestContext
from serve_app.protocol.batch import BatchRequest
from serve_app.serving import GenerationService
from tests.conftest import ROOT
from tests.unit.admissions import admission, pipeline
from tests.unit.in_process import FakeReplica

MODEL = "smollm2-135m-instruct"


def _service(handle) -> GenerationService:
    config = load_models_file(ROOT / "models.json").models[MODEL]
    router = ModelRouter({MODEL: ModelEntry(MODEL, config, handle)}, MODEL)
    return GenerationService(router, Settings(api_keys="k" * 16))


def test_request_priority_then_key_default_then_interactive():
    handle = FakeReplica(pieces=(), usage=Usage(1, 0))  # answers at once: one final chunk
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
    handle = FakeReplica(pieces=(), usage=Usage(1, 0))  # answers at once: one final chunk
    principal = Principal(key_id="web", scopes=frozenset({"inference"}))
    shared = pipeline(auth=_Presented(principal))
    batch = BatchService(_service(handle), Settings(api_keys="k" * 16), shared)
    items = [{"id": "a", "prompt": "hi", "max_tokens": 1}, {"id": "b", "prompt": "hi", "max_tokens": 1,
                                                           "priority": "interactive"}]
    asyncio.run(batch.run(BatchRequest(items=items), RequestContext("http", "the-presented-key", None)))
    assert sorted(r.priority for r in handle.requests) == ["batch", "interactive"]
