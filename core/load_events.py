"""A model replica's load event, shipped to the metrics hub (deployments -> serve_app.ops.metrics).

Shared: the replicas (deployments) send it, the hub in the ingress counts it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("aicore.metrics")


@dataclass(frozen=True)
class ModelLoadEvent:
    """A model replica finished loading its model (`ok`) or failed to."""

    model: str
    ok: bool
    duration_s: float


async def report_load(hub: Any, event: ModelLoadEvent, timeout_s: float = 30) -> None:
    """Ship one load event from a model replica; a hub that does not answer costs a warning only."""
    try:
        await asyncio.wait_for(hub.record.remote([event]), timeout_s)
    except Exception:
        logger.warning("could not report the load of model %s", event.model, exc_info=True)
