"""The ingress deployment: one FastAPI app per replica, handles to every model deployment."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.config import ModelConfig
from serve_app.app import create_app
from serve_app.logs import configure_logging
from serve_app.serving import ModelEntry, ModelRouter
from serve_app.settings import Settings
from serve_app.status import ModelStatus


@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings: Settings,
        models: dict[str, ModelConfig],
        handles: dict[str, Any],
        deployment_names: dict[str, str],
        default_model: str,
        metrics_hub: Any,
    ):
        configure_logging(settings.log_level, settings.log_format, settings.log_dir)
        entries = {name: ModelEntry(name, models[name], handles[name]) for name in models}
        app_name = serve.get_replica_context().app_name
        self._app = create_app(
            settings,
            ModelRouter(entries, default_model),
            metrics_hub,
            ModelStatus(app_name, deployment_names),
        )

    def __serve_build_asgi_app__(self):
        return self._app
