"""The ingress's one helper actor: the aggregated metrics registry and the shared in-memory state.

Deployed only with more than one ingress replica: one replica keeps both in its own process.

Both need exactly one replica and almost no CPU; as one deployment they cost one Ray actor
(its idle CPU and its own Python process of memory) instead of two (docs/benchmarks.md).
"""

from __future__ import annotations

from serve_app.ops.metrics import MetricsHub
from serve_app.state.shared_store import StateHub


class Hub(MetricsHub, StateHub):
    """`MetricsHub` (events from ingress replicas, model loads) + `StateHub` (`store_call`)."""

    def __init__(self) -> None:
        MetricsHub.__init__(self)
        StateHub.__init__(self)
