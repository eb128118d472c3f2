"""Prometheus metrics that stay correct across ingress replicas and nodes.

prometheus_client counts per process, so each ingress replica buffers request events
and ships them to one `MetricsHub` deployment, which owns the registry that
`GET /api/v1/metrics` renders. A scrape first flushes the answering replica's buffer;
other replicas' events arrive within `METRICS_FLUSH_S`. Model replicas report each load
(`ModelLoadEvent`) to the same hub, so the count outlives replicas scaled to zero.
One ingress replica (the default) needs no hub: it is its own, and model replicas report to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.load_events import ModelLoadEvent, report_load  # noqa: F401 (re-exported)

logger = logging.getLogger("aicore.metrics")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)
LOAD_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class RequestEvent:
    route: str
    model: str
    status: int
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: Optional[float] = None
    cache: Optional[str] = None  # "hit" / "miss" when the request was cacheable
    key_id: str = "-"
    tokens_per_s: Optional[float] = None  # decode speed after the first token
    error_type: Optional[str] = None  # OpenAI error type of a failed request (also mid-stream)
    error_code: Optional[str] = None


@dataclass(frozen=True)
class CountEvent:
    """An increment of one of the hub's plain counters (not tied to one request)."""

    name: str  # a key of MetricsHub.counters
    amount: float = 1


@dataclass(frozen=True)
class QuotaEvent:
    """The share of one quota a key (a web token's minter) had used when a request was admitted."""

    key_id: str
    quota: str  # tokens-day, tokens-month, requests-day, requests-month
    used_ratio: float


class MetricsHub:
    """Owns the aggregated registry (one replica)."""

    def __init__(self) -> None:
        from deployments.ray_net import bind_replica_grpc_to_node_ip  # here: deployments imports this module

        bind_replica_grpc_to_node_ip()
        self.registry = CollectorRegistry()
        labels = ["route", "model", "status"]
        self.requests = Counter("aicore_requests", "HTTP requests.", labels, registry=self.registry)
        self.latency = Histogram(
            "aicore_request_duration_seconds", "Request latency.", labels, buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "aicore_completion_tokens", "Tokens generated.", ["model"], registry=self.registry
        )
        self.prompt_tokens = Counter("aicore_prompt_tokens", "Prompt tokens processed.", ["model"], registry=self.registry)
        self.ttft = Histogram(
            "aicore_time_to_first_token_seconds", "Time to first token.", ["model"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.key_requests = Counter("aicore_key_requests", "Requests per API key id.", ["key_id"], registry=self.registry)
        self.key_errors = Counter("aicore_key_errors", "Error answers (4xx/5xx) per API key id.", ["key_id"],
                                  registry=self.registry)
        self.key_tokens = Counter("aicore_key_tokens", "Tokens per API key id.", ["key_id", "kind"],
                                  registry=self.registry)
        self.speed = Histogram(
            "aicore_generation_tokens_per_second", "Decode speed of one request after its first token.", ["model"],
            buckets=SPEED_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "aicore_errors", "Failed requests by OpenAI error type and code.", ["type", "code"], registry=self.registry
        )

        self.cache_requests = Counter(
            "aicore_cache_requests", "Cacheable requests by result (hit/miss).", ["model", "result"],
            registry=self.registry,
        )

        self.loads = Counter("aicore_model_loads", "Model loads by replicas, by outcome (ok/failed).",
                             ["model", "outcome"], registry=self.registry)
        self.load_duration = Histogram(
            "aicore_model_load_duration_seconds", "How long successful model loads took.", ["model"],
            buckets=LOAD_BUCKETS, registry=self.registry,
        )

        self.quota_used = Gauge(
            "aicore_quota_used_ratio", "Share of a key's quota used in the current period (at its last admission; "
            "1 or more: refused with quota_exceeded).", ["key_id", "quota"], registry=self.registry)

        self.counters = {
            "store_errors": Counter("aicore_store_errors", "Failed calls to the shared store (Redis).",
                                    registry=self.registry),
            "cache_bytes": Counter("aicore_cache_written_bytes", "Bytes written to the response cache.",
                                   registry=self.registry),
        }

    def record(self, events: list) -> None:
        for e in events:
            if isinstance(e, CountEvent):
                self.counters[e.name].inc(e.amount)
                continue
            if isinstance(e, QuotaEvent):
                self.quota_used.labels(e.key_id, e.quota).set(e.used_ratio)
                continue
            if isinstance(e, ModelLoadEvent):
                self.loads.labels(e.model, "ok" if e.ok else "failed").inc()
                if e.ok:
                    self.load_duration.labels(e.model).observe(e.duration_s)
                continue
            status = str(e.status)
            self.requests.labels(e.route, e.model, status).inc()
            self.latency.labels(e.route, e.model, status).observe(e.latency_s)
            if e.completion_tokens:
                self.completion_tokens.labels(e.model).inc(e.completion_tokens)
            if e.prompt_tokens:
                self.prompt_tokens.labels(e.model).inc(e.prompt_tokens)
            if e.first_token_s is not None and e.cache != "hit":
                self.ttft.labels(e.model).observe(e.first_token_s)
            if e.cache:
                self.cache_requests.labels(e.model, e.cache).inc()
            if e.key_id != "-":
                self.key_requests.labels(e.key_id).inc()
                if e.status >= 400:
                    self.key_errors.labels(e.key_id).inc()
                if e.prompt_tokens:
                    self.key_tokens.labels(e.key_id, "prompt").inc(e.prompt_tokens)
                if e.completion_tokens:
                    self.key_tokens.labels(e.key_id, "completion").inc(e.completion_tokens)
            if e.tokens_per_s is not None:
                self.speed.labels(e.model).observe(e.tokens_per_s)
            if e.error_type:
                self.errors.labels(e.error_type, e.error_code or "none").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsRecorder:
    """Per ingress replica: buffers events, flushes them to the hub in the background; with the
    hub in this process (one ingress replica) it records them at once."""

    def __init__(self, hub: Any, flush_s: float):
        self.hub = hub  # a DeploymentHandle to the MetricsHub deployment, or a MetricsHub here
        self.local = isinstance(hub, MetricsHub)
        self.flush_s = flush_s
        self._buffer: list = []
        self._task: Optional[asyncio.Task] = None

    def count(self, name: str, amount: float = 1) -> None:
        self.record(CountEvent(name, amount))

    def record(self, event) -> None:
        self.record_many([event])

    def record_many(self, events: list) -> None:
        if self.local:
            self.hub.record(events)
            return
        self._buffer.extend(events)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_s)
        await self.flush()

    async def flush(self) -> None:
        events, self._buffer = self._buffer, []
        if not events:
            return
        try:
            await self.hub.record.remote(events)
        except Exception:
            logger.warning("could not ship %d metric events", len(events), exc_info=True)

    async def render(self) -> bytes:
        if self.local:
            return self.hub.render()
        await self.flush()
        return await self.hub.render.remote()
