"""The ingress deployment: one FastAPI app per replica, handles to every model deployment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ray import serve

from deployments.config import ModelConfig
from serve_app.app import create_app
from serve_app.logs import configure_logging
from serve_app.serving import ModelEntry, ModelRouter
from serve_app.settings import Settings
from serve_app.status import ModelStatus


@dataclass(frozen=True)
class ModelSpec:
    """What the ingress knows of a model besides its handle."""

    config: ModelConfig
    deployment_name: str
    identity: str  # weights revision + config, part of cache keys
    footprint: Optional[int] = None  # bytes one replica needs (the memory budget's unit)


@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings: Settings,
        models: dict[str, ModelSpec],
        handles: dict[str, Any],
        default_model: Optional[str],
        metrics_hub: Any,
        chat_hub: Any = None,
        default_embedding_model: Optional[str] = None,
    ):
        configure_logging(settings.log_level, settings.log_format, settings.log_dir)
        entries = {
            name: ModelEntry(name, spec.config, handles[name], spec.identity) for name, spec in models.items()
        }
        app_name = serve.get_replica_context().app_name
        self._app = create_app(
            settings,
            ModelRouter(entries, default_model, default_embedding_model),
            metrics_hub,
            ModelStatus(app_name, {name: spec.deployment_name for name, spec in models.items()}),
            chat_hub,
            {name: spec.footprint for name, spec in models.items()},
        )

    def __serve_build_asgi_app__(self):
        return self._app
