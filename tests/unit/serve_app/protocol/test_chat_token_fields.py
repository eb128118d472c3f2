"""`max_completion_tokens`, `logprobs` and `top_logprobs`: one definition (ChatTokenFields) for
`/v1/chat/completions` and every `/api/v1` request, WebSocket message and batch item. Checked on
the request classes and through the in-process app (no Ray: a refused request reaches no model);
the answers with real weights: tests/integration/test_logprobs_channels.py."""

import asyncio
import json

import httpx
import pytest
from pydantic import ValidationError

from core.errors import AICoreError
from core.settings import Settings
from deployments.config import load_models_file
from serve_app.app import create_app
from serve_app.batch.service import parse_item
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest
from serve_app.protocol.batch import BatchChatItem, BatchGenerateItem
from serve_app.protocol.openai import ChatCompletionRequest, CompletionRequest
from serve_app.protocol.ws import WsChat, WsGenerate
from serve_app.websocket.session import WsSession
from tests import ROOT

BOOT = "unit-boot-key-0123456789"
ASK = {"messages": [{"role": "user", "content": "hi"}]}
# Every request class with the fields, and the least that makes one valid.
REQUESTS = [(ChatCompletionRequest, ASK), (GenerateRequest, {"prompt": "hi"}), (ChatRequest, ASK),
            (WsGenerate, {"type": "generate", "id": "g", "prompt": "hi"}), (WsChat, {"type": "chat", "id": "c", **ASK}),
            (BatchGenerateItem, {"id": "g", "prompt": "hi"}), (BatchChatItem, {"id": "c", **ASK})]


@pytest.mark.parametrize("cls,base", REQUESTS, ids=[c.__name__ for c, _ in REQUESTS])
def test_every_request_maps_the_fields_the_same_way(cls, base):
    params = cls(**base, logprobs=True, top_logprobs=3, max_completion_tokens=5).to_sampling_params()
    assert (params.logprobs, params.max_tokens) == (3, 5)
    assert cls(**base, logprobs=True).to_sampling_params().logprobs == 0  # the chosen tokens, no alternatives
    assert cls(**base, logprobs=False, top_logprobs=0).to_sampling_params().logprobs is None
    assert cls(**base, max_tokens=7, max_completion_tokens=5).to_sampling_params().max_tokens == 7  # as OpenAI
    for bad in ({"top_logprobs": 2}, {"logprobs": False, "top_logprobs": 2}):
        with pytest.raises(ValidationError, match="top_logprobs needs logprobs: true") as refused:
            cls(**base, **bad)
        assert refused.value.errors()[0]["loc"] == ("top_logprobs",)
    for bad in ({"logprobs": True, "top_logprobs": 21}, {"max_completion_tokens": 0}, {"logprobs": 1}):
        with pytest.raises(ValidationError):
            cls(**base, **bad)


def test_legacy_completions_keep_their_own_logprobs():
    assert CompletionRequest(prompt="hi", logprobs=2).to_sampling_params().logprobs == 2
    for chat_only in ({"top_logprobs": 1}, {"max_completion_tokens": 5}):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            CompletionRequest(prompt="hi", **chat_only)


class _Status:
    """ModelStatus without Ray Serve: no model has replicas (none is called here)."""

    app_name, present, reasons = None, {}, {}

    async def states(self, fresh=False, stale_ok=False):
        return {}


def _app():
    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, next(iter(models)))
    return create_app(Settings(api_keys=BOOT), router, None, _Status())


def test_alternatives_without_logprobs_are_a_400_naming_top_logprobs_on_every_channel():
    async def main():
        transport = httpx.ASGITransport(app=_app(), client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers={"X-API-Key": BOOT}) as c:
            for path, body in (("/api/v1/generate", {"prompt": "hi"}), ("/api/v1/chat", ASK),
                               ("/v1/chat/completions", ASK)):
                r = await c.post(path, json={**body, "top_logprobs": 2, "stream": True})
                assert r.status_code == 400, (path, r.text)
                error = r.json()["error"]
                assert error["param"] == "top_logprobs" and "logprobs: true" in error["message"], (path, error)
            r = await c.post("/api/v1/generate/batch", json={"items": [{"id": "a", "prompt": "hi", "top_logprobs": 1}]})
            assert r.status_code == 200, r.text
            item = r.json()["results"][0]
            assert item["status"] == "error" and item["error"]["param"] == "top_logprobs", item
    asyncio.run(main())
    with pytest.raises(AICoreError) as refused:
        parse_item({"id": "a", **ASK, "top_logprobs": 1}, None)
    assert refused.value.status == 400 and refused.value.param == "top_logprobs"
    with pytest.raises(AICoreError) as refused:  # a WebSocket request message, parsed as the session does
        WsSession._parse(None, json.dumps({"type": "chat", "id": "c", **ASK, "top_logprobs": 1}))
    assert refused.value.status == 400 and refused.value.param == "top_logprobs"
