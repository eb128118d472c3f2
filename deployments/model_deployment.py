"""The Ray Serve deployment that holds one model. The builder binds one per models.json entry."""

from __future__ import annotations

import asyncio
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
from deployments.types import EmbeddingResult, GenerationChunk, GenerationRequest
from deployments.weights import resolve_weights
from serve_app.logs import configure_logging, request_id_var
from serve_app.metrics import ModelLoadEvent, report_load

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


def _load_backend(model_name: str, config: ModelConfig, context: ReplicaContext):
    cache_dir, config_dir = Path(context.cache_dir), Path(context.config_dir) if context.config_dir else None
    weights = resolve_weights(config.path, cache_dir, config_dir)
    tokenizer = resolve_weights(config.tokenizer, cache_dir, config_dir) if config.tokenizer else None
    backend = get_backend(config.type, config.task)(model_name, config, weights, tokenizer)
    backend.cache_dir = cache_dir
    if config.adapters and not backend.supports_adapters:
        raise ValueError(f"model {model_name!r}: backend {config.type!r} does not serve adapters")
    backend.adapter_paths = {
        name: resolve_weights(path, cache_dir, config_dir) for name, path in config.adapters.items()
    }
    backend.load()
    return backend


class ModelDeployment:
    async def __init__(self, model_name: str, config: ModelConfig, context: ReplicaContext, metrics_hub=None):
        """Load the model; report the load (ok or failed, with its duration) to `metrics_hub`.

        Async so that a failed load is reported before the exception ends the replica; the
        load itself still blocks this replica's event loop, which has nothing else to do yet.
        """
        configure_logging(context.log_level, context.log_format, context.log_dir)
        self.model_name = model_name
        self.stream_interval_s = config.stream_interval_ms / 1000
        started = time.monotonic()
        try:
            self.backend = _load_backend(model_name, config, context)
        except BaseException:
            if metrics_hub is not None:
                await report_load(metrics_hub, ModelLoadEvent(model_name, False, time.monotonic() - started))
            raise
        self.load_time_s = time.monotonic() - started
        self.last_used = time.time()
        self.in_flight = 0
        self.served = 0  # generation requests this replica has started
        logger.info("model loaded", extra={"model": model_name, "load_time_s": round(self.load_time_s, 3)})
        # In the background: readiness does not wait for the metrics hub.
        self._load_report = None if metrics_hub is None else asyncio.get_running_loop().create_task(
            report_load(metrics_hub, ModelLoadEvent(model_name, True, self.load_time_s))
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream chunks; the ingress consumes this with `handle.options(stream=True)`."""
        request_id_var.set(request.request_id)  # this replica's log lines carry the ingress's id
        self.in_flight += 1
        self.served += 1
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

    def count_message_tokens(self, messages: list[dict]) -> list[int]:
        """Per message: its content's tokens plus a few for the role markers of a chat template."""
        return [self.backend.count_tokens(m["content"]) + 4 for m in messages]

    async def embed(self, request_id: str, texts: list[str]) -> EmbeddingResult:
        request_id_var.set(request_id)
        self.in_flight += 1
        self.last_used = time.time()
        try:
            return await self.backend.embed(texts)
        except AICoreError:
            raise
        except Exception as error:
            logger.exception("embedding failed", extra={"model": self.model_name, "request_id": request_id})
            raise BackendFailure("the model failed to compute embeddings") from error
        finally:
            self.in_flight -= 1

    def info(self) -> dict:
        return {
            "load_time_s": round(self.load_time_s, 3),
            "last_used": self.last_used,
            "in_flight": self.in_flight,  # includes the queued ones
            "queued": self.backend.queued,
            "served": self.served,
            "cancelled": self.backend.cancelled,
            "rss_bytes": _rss_bytes(),
            "adapters": self.backend.loaded_adapters(),
            "node_id": _node_id(),
        }

    def check_health(self) -> None:
        self.backend.health()

    def __del__(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.unload()
