"""Which model a request names: its entry (config, Serve handle, identity), defaults by task,
and `<model>:<adapter>` ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from core.errors import InvalidRequest, ModelNotFound
from deployments.config import ModelConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: ModelConfig
    handle: Any  # ray.serve.handle.DeploymentHandle
    identity: str = ""  # weights revision + config: part of every cache key


class ModelRouter:
    def __init__(
        self, entries: dict[str, ModelEntry], default_model: Optional[str], default_embedding_model: Optional[str] = None
    ):
        self.entries = entries
        self.default_model = default_model
        self.default_embedding_model = default_embedding_model

    def resolve(self, name: Optional[str], task: Optional[str] = None) -> ModelEntry:
        """The model `name` (or the default for `task`); a model of another task is a 400."""
        if not name:
            name = self.default_embedding_model if task == "embed" else self.default_model
            if name is None:
                raise InvalidRequest(f"no {'embedding' if task == 'embed' else 'generation'} model is configured",
                                     param="model")
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} does not exist", param="model")
        if task is not None and entry.config.task != task:
            if task == "embed":
                raise InvalidRequest(f"model {name!r} does not produce embeddings", param="model")
            raise InvalidRequest(
                f"model {name!r} is an embedding model: use /v1/embeddings or /api/v1/embeddings", param="model"
            )
        return entry

    def resolve_adapter(self, name: Optional[str], task: Optional[str]) -> tuple[ModelEntry, Optional[str]]:
        """`<model>` or `<model>:<adapter>` (an adapter listed in the model's entry)."""
        base, colon, adapter = (name or "").partition(":")
        entry = self.resolve(base or None, task)
        if colon and adapter not in entry.config.adapters:
            raise ModelNotFound(f"model {name!r} does not exist", param="model")
        return entry, adapter or None

    def model_ids(self) -> list[str]:
        """Every id a request may name: each model, then each of its adapters as `<model>:<adapter>`."""
        ids = []
        for name, entry in self.entries.items():
            ids += [name] + [f"{name}:{adapter}" for adapter in entry.config.adapters]
        return ids
