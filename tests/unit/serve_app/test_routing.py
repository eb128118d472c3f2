"""Model resolution by task (a fake handle: routing logic only; the integration tests prove the backends)."""

import pytest

from core.errors import InvalidRequest, ModelNotFound
from core.settings import Settings
from deployments.config import parse_models
from serve_app.builder import pick_defaults
from serve_app.model_router import ModelEntry, ModelRouter

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


def test_a_model_outside_the_callers_list_is_the_same_404_as_a_missing_one():
    """No enumeration: not a 403 for an existing model, nor a 400 saying an existing model has another task."""
    router = _router()
    none = lambda name: False  # noqa: E731 - a key with an empty model list
    answers = {}
    for name, task in (("chat", "generate"), ("vec", "generate"), ("chat", "embed"), ("ghost", "generate")):
        with pytest.raises(ModelNotFound) as info:
            router.resolve(name, task, none if name != "ghost" else None)
        error = info.value
        assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
        answers[name, task] = error.message.replace(name, "<m>")
    assert len(set(answers.values())) == 1
    assert answers["ghost", "generate"] == "The model `<m>` does not exist or you do not have access to it."
    with pytest.raises(ModelNotFound, match="`chat:alpha`"):
        router.resolve_adapter("chat:alpha", "generate", none)
    with pytest.raises(ModelNotFound, match="`chat`"):  # the default model, when the key may not use it
        router.resolve_adapter(None, "generate", none)
    assert router.resolve("chat", "generate", lambda name: name == "chat").name == "chat"
