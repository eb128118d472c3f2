"""Which model a request names: its entry (config, Serve handle, identity), defaults by task,
and `<model>:<adapter>` ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from core.errors import InvalidRequest, ModelNotFound
from deployments.config import ModelConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: ModelConfig
    handle: Any  # ray.serve.handle.DeploymentHandle
    identity: str = ""  # weights revision + config: part of every cache key
    # How its chat template takes tools (deployments/chat_template.py tool_format): None, the
    # generic tool prompt; "hermes" or "generic", the template renders the tools itself.
    tool_format: Optional[str] = None


class ModelRouter:
    def __init__(
        self, entries: dict[str, ModelEntry], default_model: Optional[str], default_embedding_model: Optional[str] = None
    ):
        self.entries = entries
        self.default_model = default_model
        self.default_embedding_model = default_embedding_model

    def resolve(self, name: Optional[str], task: Optional[str] = None,
                may_use: Optional[Callable[[str], bool]] = None) -> ModelEntry:
        """The model `name` (or the default for `task`); a model of another task is a 400. With
        `may_use` (the caller's key), a model outside the key's list is a 404 exactly like a model
        that does not exist, checked before anything else about it is revealed."""
        if not name:
            name = self.default_embedding_model if task == "embed" else self.default_model
            if name is None:
                raise InvalidRequest(f"no {'embedding' if task == 'embed' else 'generation'} model is configured",
                                     param="model")
        entry = self.entries.get(name)
        if entry is None or (may_use is not None and not may_use(name)):
            raise ModelNotFound.named(name)
        if task is not None and entry.config.task != task:
            if task == "embed":
                raise InvalidRequest(f"model {name!r} does not produce embeddings", param="model")
            raise InvalidRequest(
                f"model {name!r} is an embedding model: use /v1/embeddings or /api/v1/embeddings", param="model"
            )
        return entry

    def resolve_adapter(self, name: Optional[str], task: Optional[str],
                        may_use: Optional[Callable[[str], bool]] = None) -> tuple[ModelEntry, Optional[str]]:
        """`<model>` or `<model>:<adapter>` (an adapter listed in the model's entry); `may_use` as
        for `resolve` (a key allowed a model may use its adapters)."""
        base, colon, adapter = (name or "").partition(":")
        try:
            entry = self.resolve(base or None, task, may_use)
        except ModelNotFound:
            if not colon:
                raise
            raise ModelNotFound.named(name) from None  # the id as the caller wrote it
        if colon and adapter not in entry.config.adapters:
            raise ModelNotFound.named(name)
        return entry, adapter or None

    def model_ids(self) -> list[str]:
        """Every id a request may name: each model, then each of its adapters as `<model>:<adapter>`."""
        ids = []
        for name, entry in self.entries.items():
            ids += [name] + [f"{name}:{adapter}" for adapter in entry.config.adapters]
        return ids
