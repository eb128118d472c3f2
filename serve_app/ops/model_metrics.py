"""Model gauges read at scrape time: state, replicas, requests in flight and queued, load time, memory.

Counters and histograms come from the MetricsHub (events from every ingress replica, and
each model load reported by the model replica); these gauges describe the present, so the
scraped ingress reads them from Ray Serve's controller and from one running replica of each
model when the scrape arrives. With several replicas of a model, the per-replica gauges
(in flight, queued, memory, load time, cancelled) are that one replica's figures, labelled
with its node, not a sum over the replicas; `aicore_model_replicas` says how many there are.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serve_app.ops.engine_metrics import engine_families
from serve_app.ops.status import ModelView

STATES = ("ready", "loading", "unloading", "unloaded", "failed", "unknown")


class _Snapshot:
    """A prometheus_client collector over one scrape's model views."""

    def __init__(self, views: dict[str, ModelView], default_model: str):
        self.views = views
        self.default_model = default_model

    def collect(self):
        state = GaugeMetricFamily("aicore_model_state", "1 for the model's current state, 0 for the others.",
                                  labels=["model", "state"])
        replicas = GaugeMetricFamily("aicore_model_replicas", "Running replicas.", labels=["model"])
        in_flight = GaugeMetricFamily("aicore_model_requests_in_flight",
                                      "Requests a model replica is working on or queueing for its engine.",
                                      labels=["model", "node"])
        queued = GaugeMetricFamily("aicore_model_requests_queued",
                                   "Requests in a model replica that wait for its engine (part of in flight).",
                                   labels=["model", "node"])
        memory = GaugeMetricFamily("aicore_model_resident_memory_bytes", "Resident memory of a model replica.",
                                   labels=["model", "node"])
        load = GaugeMetricFamily("aicore_model_replica_load_duration_seconds",
                                 "How long the running replica took to load the model.", labels=["model", "node"])
        cancelled = CounterMetricFamily("aicore_model_cancelled_generations",
                                        "Generations stopped because the client left (replica lifetime).",
                                        labels=["model", "node"])
        ready = GaugeMetricFamily("aicore_ready", "1 when the default model can serve (readiness).")
        node_used = GaugeMetricFamily("aicore_node_memory_used_ratio", "Memory in use on a node running models (0-1).",
                                      labels=["node"])
        node_alert = GaugeMetricFamily("aicore_node_memory_alert",
                                       "1 while a node's memory use is at or above MEMORY_ALERT_PERCENT.", labels=["node"])
        nodes: dict[str, dict] = {}
        for name, view in self.views.items():
            for s in STATES:
                state.add_metric([name, s], 1.0 if view.state == s else 0.0)
            replicas.add_metric([name], view.replicas)
            live, node = view.live, view.live.get("node_id") or "unknown"
            if "in_flight" in live:
                in_flight.add_metric([name, node], live["in_flight"])
            if "queued" in live:
                queued.add_metric([name, node], live["queued"])
            if live.get("rss_bytes"):
                memory.add_metric([name, node], live["rss_bytes"])
            if "load_time_s" in live:
                load.add_metric([name, node], live["load_time_s"])
            if "cancelled" in live:
                cancelled.add_metric([name, node], live["cancelled"])
            for report in view.lifecycle.get("reports", ()):  # every replica, on every node
                if report.get("node_memory_total"):
                    nodes[report.get("node_id") or "unknown"] = report
        default = self.views.get(self.default_model)
        ready.add_metric([], 1.0 if default is not None and default.state == "ready" else 0.0)
        for node, report in nodes.items():
            total, available = report["node_memory_total"], report["node_memory_available"]
            node_used.add_metric([node], (total - available) / total)
            node_alert.add_metric([node], 1.0 if report.get("memory_alert") else 0.0)
        yield from (state, replicas, in_flight, queued, memory, load, cancelled, ready, node_used, node_alert)
        yield from engine_families(self.views)


def render_model_metrics(views: dict[str, ModelView], default_model: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(views, default_model))
    return generate_latest(registry)
