"""The Ray Serve deployment that holds one model. The builder binds one per models.json entry."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

from core.errors import AICoreError, BackendFailure, ModelUnloaded
from core.load_events import ModelLoadEvent, report_load
from core.logs import configure_logging, request_id_var
from core.types import EmbeddingResult, GenerationChunk, GenerationRequest
from deployments import lifecycle
from deployments.backends import get_backend
from deployments.config import ModelConfig
from deployments.memory import node_memory
from deployments.model_source import ModelSource
from deployments.ray_net import bind_replica_grpc_to_node_ip
from deployments.streaming import coalesce, load_scaled_interval
from deployments.weights import resolve_weights

logger = logging.getLogger("aicore.model")


@dataclass(frozen=True)
class ReplicaContext:
    """Runtime settings a model replica needs, resolved by the builder."""

    cache_dir: str
    config_dir: Optional[str] = None
    log_level: str = "INFO"
    log_format: str = "text"
    log_dir: Optional[str] = None
    memory_alert_percent: float = 90.0
    config_path: Optional[str] = None  # models.json: a replica started by a redeploy reads its entry there
    request_timeout_s: float = 300.0  # the ingress's wait for a first token: longer queue waits are refused

    @property
    def source(self) -> Optional[ModelSource]:
        """models.json, read by a replica that a redeploy started with a newer entry than the bound one."""
        return ModelSource(Path(self.config_path), Path(self.cache_dir)) if self.config_path else None


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
    backend.request_timeout_s = context.request_timeout_s
    if config.adapters and not backend.supports_adapters:
        raise ValueError(f"model {model_name!r}: backend {config.type!r} does not serve adapters")
    backend.adapter_paths = {
        name: resolve_weights(path, cache_dir, config_dir) for name, path in config.adapters.items()
    }
    backend.load()
    return backend


class ModelDeployment:
    async def __init__(self, model_name: str, config: ModelConfig, context: ReplicaContext, metrics_hub=None):
        """Load the model; report the load (ok or failed, with its duration) to `metrics_hub` (a
        handle, or the name of the deployment to report to).

        Async so that a failed load is reported before the exception ends the replica; the
        load itself still blocks this replica's event loop, which has nothing else to do yet.
        """
        bind_replica_grpc_to_node_ip()
        configure_logging(context.log_level, context.log_format, context.log_dir)
        if isinstance(metrics_hub, str):  # no hub: the deployment that keeps the metrics, by name
            from ray import serve

            metrics_hub = serve.get_deployment_handle(metrics_hub, serve.get_replica_context().app_name)
        self.model_name = model_name
        config = current_entry(context, model_name, config)
        self.config = config
        self.stream_interval_s = config.stream_interval_ms / 1000  # lengthened while many streams run
        started = time.monotonic()
        self.started_at = time.time()
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
        self.cancel_before = 0.0  # a forced unload at this time stops generations started before it
        logger.info("model loaded", extra={"model": model_name, "load_time_s": round(self.load_time_s, 3)})
        self._reporter = _Reporter(self, context.memory_alert_percent)
        await self._reporter.published()  # listed with its figures as soon as Serve calls it ready
        # In the background: readiness does not wait for the metrics hub.
        self._load_report = None if metrics_hub is None else asyncio.get_running_loop().create_task(
            report_load(metrics_hub, ModelLoadEvent(model_name, True, self.load_time_s))
        )

    def report(self) -> dict:
        """What this replica publishes for listings, metrics, drains and the memory budget."""
        return {**self.info(), "started_at": self.started_at}

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream chunks; the ingress consumes this with `handle.options(stream=True)`."""
        request_id_var.set(request.request_id)  # this replica's log lines carry the ingress's id
        self.in_flight += 1
        self.served += 1
        self.last_used = started = time.time()
        self._reporter.started()
        try:
            interval = load_scaled_interval(self.stream_interval_s, lambda: self.in_flight)
            # Closed on the way out, before the report below: a bare `async for` leaves the engine's
            # stream to the garbage collector, so a request whose client left would still count as
            # queued (or hold its slot) in the report published when the replica turns idle.
            async with aclosing(coalesce(self.backend.stream(request), interval)) as chunks:
                async for chunk in chunks:
                    if self.cancel_before > started:  # leaving the loop closes the engine's stream
                        raise ModelUnloaded(f"model {self.model_name!r} was unloaded by an administrator "
                                            "(forced); the next request loads it again")
                    yield chunk
        except AICoreError:
            raise
        except Exception as error:  # an engine fault: log it here, send nothing internal
            logger.exception("generation failed", extra={"model": self.model_name, "request_id": request.request_id})
            raise BackendFailure("the model failed to generate a response") from error
        finally:
            self.in_flight -= 1
            await self._reporter.ended()

    def forget_conversation(self, conversation: str) -> int:
        """A server-side session was deleted: drop the KV this replica kept of it."""
        return self.backend.forget_conversation(conversation)

    async def embed(self, request_id: str, texts: list[str]) -> EmbeddingResult:
        request_id_var.set(request_id)
        self.in_flight += 1
        self.last_used = time.time()
        self._reporter.started()
        try:
            return await self.backend.embed(texts)
        except AICoreError:
            raise
        except Exception as error:
            logger.exception("embedding failed", extra={"model": self.model_name, "request_id": request_id})
            raise BackendFailure("the model failed to compute embeddings") from error
        finally:
            self.in_flight -= 1
            await self._reporter.ended()

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
            "engine": self.backend.engine_report(),
            "node_id": _node_id(),
            "pid": os.getpid(),
        }

    def check_health(self) -> None:
        self.backend.health()

    def __del__(self):
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.stop()
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.unload()


REVISION_ENV = "AICORE_MODEL_REVISION"


def current_entry(context: ReplicaContext, model_name: str, bound: ModelConfig) -> ModelConfig:
    """The entry this replica was deployed with. `scripts.deploy` restarts only the deployments
    whose entry changed (their ray_actor_options carry the new revision in REVISION_ENV) without
    rebuilding the app, so the entry bound at build time may be older than the deployed one."""
    wanted, source = os.environ.get(REVISION_ENV), context.source
    if not wanted or source is None or source.revision(bound) == wanted:
        return bound
    entry = source.entry(model_name, wanted)
    if entry is not None:
        return entry
    logger.warning("models.json no longer matches the deployed revision of %s; using the built entry", model_name)
    return bound


class _Reporter:
    """Publishes the replica's report: from a thread twice a second while requests are in flight
    and every 2 s while idle (it also applies forced unloads, which only running work needs, and
    warns once when the node's memory use passes MEMORY_ALERT_PERCENT), and at once when the
    replica turns busy or idle, so a listing right after a response is exact. Idle replicas tick
    slowly and busy ones write no report per request: every GCS call wakes processes beside the
    model's threads."""

    def __init__(self, replica: ModelDeployment, alert_percent: float):
        self.replica = replica
        self.alert_percent = alert_percent
        self.alerting = False
        self.node_memory = node_memory()
        self.app, self.replica_id = _replica_identity()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the report is built under it: the last write is the newest
        if self.replica_id is not None:  # outside Serve (unit use) nothing is published
            threading.Thread(target=self._run, name="aicore-reporter", daemon=True).start()

    def publish(self) -> None:
        if self.replica_id is None:
            return
        with self._lock:
            total, available = self.node_memory
            lifecycle.publish_report(self.app, self.replica.model_name, self.replica_id, {
                **self.replica.report(), "node_memory_total": total, "node_memory_available": available,
                "memory_alert": self.alerting,
            })

    async def published(self) -> None:
        """Publish from the request path (a GCS write, off the event loop); never fails a request."""
        try:
            await asyncio.to_thread(self.publish)
        except BaseException:  # cancelled or the GCS unreachable: the thread publishes soon anyway
            self.poke()

    def _run(self) -> None:
        model = self.replica.model_name
        while not self._stop.is_set():
            self._wake.wait(lifecycle.REPORT_EVERY_S if self.replica.in_flight else lifecycle.IDLE_REPORT_EVERY_S)
            self._wake.clear()
            try:
                if self.replica.in_flight:  # a forced unload cancels generations that run
                    control = lifecycle.read_control(self.app, model)
                    if control.mode == lifecycle.UNLOADING and control.force:
                        self.replica.cancel_before = max(self.replica.cancel_before, control.at)
                self.node_memory = total, available = node_memory()
                self._alert(100.0 * (total - available) / total)
                self.publish()
            except Exception:  # the GCS unreachable for a moment: try again next tick
                logger.debug("replica report failed", exc_info=True)
        try:
            lifecycle.forget_report(self.app, model, self.replica_id)
        except Exception:
            pass

    def _alert(self, used_percent: float) -> None:
        if used_percent >= self.alert_percent and not self.alerting:
            logger.warning("node memory use %.1f%% passed MEMORY_ALERT_PERCENT %.0f%%", used_percent,
                           self.alert_percent, extra={"model": self.replica.model_name, "node_id": _node_id()})
        self.alerting = used_percent >= self.alert_percent

    def poke(self) -> None:
        """Publish now (from the thread)."""
        self._wake.set()

    def started(self) -> None:
        """A request started: publish now if the replica was idle (the policy must not unload a
        replica that just got work); while it is busy the thread publishes twice a second, so
        many concurrent requests cost no GCS write each."""
        if self.replica.in_flight == 1:
            self.poke()

    async def ended(self) -> None:
        """A request ended: publish at once when it was the last one, so a listing right after a
        response is exact (last_used, served, nothing in flight)."""
        if self.replica.in_flight == 0:
            await self.published()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _replica_identity() -> tuple[str, Optional[str]]:
    try:
        from ray import serve

        context = serve.get_replica_context()
        return context.app_name or "", context.replica_id.unique_id
    except Exception:
        return "", None
