"""The ingress deployment: one FastAPI app per replica, handles to every model deployment."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray import serve

from core.logs import configure_logging
from core.settings import Settings
from deployments.chat_template import model_template, tool_format
from deployments.config import ModelConfig
from deployments.model_deployment import ReplicaContext
from deployments.ray_net import bind_replica_grpc_to_node_ip
from serve_app.app import create_app
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.ops.metrics import MetricsHub
from serve_app.ops.reload_audit import record_reload
from serve_app.ops.status import ModelStatus

logger = logging.getLogger("aicore.ingress")

INGRESS_NAME = "ingress"  # the deployment's name: model replicas find it by name when there is no hub


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
        *,
        settings: Settings,
        models: dict[str, ModelSpec],
        handles: dict[str, Any],
        default_model: Optional[str],
        default_embedding_model: Optional[str] = None,
        hub: Any = None,  # the hub's handle (several ingress replicas); None: this replica keeps metrics and state
        context: Optional[ReplicaContext] = None,
    ):
        bind_replica_grpc_to_node_ip()
        configure_logging(settings.log_level, settings.log_format, settings.log_dir)
        self._context = context
        entries = {
            name: ModelEntry(name, spec.config, handles[name], spec.identity, self._tool_format(spec.config))
            for name, spec in models.items()
        }
        self._revisions = {name: spec.identity for name, spec in models.items()}
        app_name = serve.get_replica_context().app_name
        self._app = create_app(
            settings,
            ModelRouter(entries, default_model, default_embedding_model),
            hub if hub is not None else MetricsHub(),
            ModelStatus(app_name, {name: spec.deployment_name for name, spec in models.items()}),
            hub,
            {name: spec.footprint for name, spec in models.items()},
        )

    def _tool_format(self, config: ModelConfig) -> Optional[str]:
        """How the model's chat template takes tools, read from the template its replicas render."""
        context = self._context
        if context is None:
            return tool_format(config.chat_template)
        template = model_template(config, Path(context.cache_dir),
                                  Path(context.config_dir) if context.config_dir else None)
        return tool_format(template)

    def __serve_build_asgi_app__(self):
        return self._app

    async def record(self, events: list) -> None:
        """Model replicas' load events, when this replica keeps the metrics (no hub)."""
        self._app.state.metrics.record_many(events)

    async def reconfigure(self, user_config: dict) -> None:
        """`scripts.deploy` sends each model's revision: re-read the changed entries (limits, cache
        identity, footprint) from models.json. Adding or removing a model needs a full deploy.
        Each reload is recorded in the audit log, its actor the deploy command and the config's
        revision (`config_revision`, a hash of every model's revision)."""
        revisions = user_config.get("revisions") or {}
        changed = [name for name, rev in revisions.items() if self._revisions.get(name) != rev]
        if not changed or self._context is None or not self._context.config_path:
            return
        before = dict(self._revisions)
        self._reload(revisions, changed)
        await record_reload(self._app.state, user_config, before, self._revisions, self._context.config_path)

    def _reload(self, revisions: dict, changed: list[str]) -> None:
        source = self._context.source
        router, control = self._app.state.router, self._app.state.control
        for name in changed:
            entry, config = router.entries.get(name), source.entry(name, revisions[name])
            if entry is None or config is None:
                logger.warning("model %s: models.json does not match the deployed revision; kept as it was", name)
                continue
            router.entries[name] = dataclasses.replace(entry, config=config, identity=revisions[name],
                                                       tool_format=self._tool_format(config))
            control.footprints[name] = source.footprint(config)
            self._revisions[name] = revisions[name]
            logger.info("model %s: now serving revision %s", name, revisions[name])
