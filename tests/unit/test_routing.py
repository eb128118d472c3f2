"""Model resolution by task (a fake handle: routing logic only; the integration tests prove the backends)."""

import pytest

from deployments.config import parse_models
from core.errors import InvalidRequest, ModelNotFound
from serve_app.builder import pick_defaults
from serve_app.model_router import ModelEntry, ModelRouter
from core.settings import Settings

MODELS = parse_models({"models": {
    "chat": {"type": "gguf", "path": "x.gguf"},
    "vec": {"type": "onnx", "task": "embed", "path": "m.onnx"},
}})


def _router() -> ModelRouter:
    entries = {name: ModelEntry(name, config, handle=None) for name, config in MODELS.models.items()}
    return ModelRouter(entries, *pick_defaults(MODELS, Settings()))


def test_defaults_per_task():
    router = _router()
    assert router.resolve(None, "generate").name == "chat"
    assert router.resolve(None, "embed").name == "vec"


def test_wrong_task_is_invalid_request_naming_model():
    router = _router()
    with pytest.raises(InvalidRequest, match="embedding model") as info:
        router.resolve("vec", "generate")
    assert info.value.param == "model" and info.value.status == 400
    with pytest.raises(InvalidRequest, match="does not produce embeddings"):
        router.resolve("chat", "embed")
    with pytest.raises(ModelNotFound):
        router.resolve("other", "embed")


def test_default_embedding_model_must_be_an_embedding_model():
    with pytest.raises(ValueError, match="DEFAULT_EMBEDDING_MODEL 'chat'"):
        pick_defaults(MODELS, Settings(default_embedding_model="chat"))
    only_chat = parse_models({"models": {"chat": {"type": "gguf", "path": "x"}}})
    assert pick_defaults(only_chat, Settings()) == ("chat", None)
