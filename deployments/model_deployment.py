"""The Ray Serve deployment that holds one model. The builder binds one per models.json entry."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

from deployments.backends import get_backend
from deployments.config import ModelConfig
from deployments.errors import AICoreError, BackendFailure
from deployments.streaming import coalesce
from deployments.types import GenerationChunk, GenerationRequest
from deployments.weights import resolve_weights
from serve_app.logs import configure_logging, request_id_var

logger = logging.getLogger("aicore.model")


@dataclass(frozen=True)
class ReplicaContext:
    """Runtime settings a model replica needs, resolved by the builder."""

    cache_dir: str
    config_dir: Optional[str] = None
    log_level: str = "INFO"
    log_format: str = "text"
    log_dir: Optional[str] = None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _node_id() -> Optional[str]:
    """The Ray node this replica runs on (models can be pinned to nodes by custom resources)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


class ModelDeployment:
    def __init__(self, model_name: str, config: ModelConfig, context: ReplicaContext):
        configure_logging(context.log_level, context.log_format, context.log_dir)
        self.model_name = model_name
        self.stream_interval_s = config.stream_interval_ms / 1000
        started = time.monotonic()
        weights = resolve_weights(
            config.path, Path(context.cache_dir), Path(context.config_dir) if context.config_dir else None
        )
        self.backend = get_backend(config.type)(model_name, config, weights)
        self.backend.load()
        self.load_time_s = time.monotonic() - started
        self.last_used = time.time()
        self.in_flight = 0
        logger.info("model loaded", extra={"model": model_name, "load_time_s": round(self.load_time_s, 3)})

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream chunks; the ingress consumes this with `handle.options(stream=True)`."""
        request_id_var.set(request.request_id)  # this replica's log lines carry the ingress's id
        self.in_flight += 1
        self.last_used = time.time()
        try:
            async for chunk in coalesce(self.backend.stream(request), self.stream_interval_s):
                yield chunk
        except AICoreError:
            raise
        except Exception as error:  # an engine fault: log it here, send nothing internal
            logger.exception("generation failed", extra={"model": self.model_name, "request_id": request.request_id})
            raise BackendFailure("the model failed to generate a response") from error
        finally:
            self.in_flight -= 1

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.last_used = time.time()
        return await self.backend.embed(texts)

    def info(self) -> dict:
        return {
            "load_time_s": round(self.load_time_s, 3),
            "last_used": self.last_used,
            "in_flight": self.in_flight,
            "cancelled": self.backend.cancelled,
            "rss_bytes": _rss_bytes(),
            "node_id": _node_id(),
        }

    def check_health(self) -> None:
        self.backend.health()

    def __del__(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.unload()
