"""Model states read from Ray Serve's controller (cached briefly: listings are polled)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Optional

from serve_app.ops.refreshed import STALE_S, Refreshed

logger = logging.getLogger("aicore.status")

States = dict[str, tuple[str, int]]  # model -> (state, running replicas)


def _state(status: str, running: int) -> str:
    if status in ("UNHEALTHY", "DEPLOY_FAILED"):
        return "failed"
    if running > 0:
        return "ready"
    if status in ("UPDATING", "UPSCALING"):
        return "loading"
    return "unloaded"


def read_states(app_name: Optional[str], deployments: dict[str, str], reasons: Optional[dict] = None,
                present: Optional[dict] = None) -> States:
    """Blocking: ask the Serve controller. `deployments` maps model -> deployment name; the
    controller's message for a failed model goes into `reasons`, and the count of replicas in any
    state (starting and stopping ones too) into `present`."""
    apps = _serve_details().get("applications") or {}
    app = apps.get(app_name) if app_name else next(iter(apps.values()), None)
    found = (app or {}).get("deployments") or {}
    states: States = {}
    for model, deployment in deployments.items():
        info = found.get(deployment)
        if info is None:
            states[model] = ("unknown", 0)
            continue
        replica_states = [_value(r.get("state")) for r in info.get("replicas") or ()]
        running = replica_states.count("RUNNING")
        states[model] = (_state(_value(info.get("status")), running), running)
        if present is not None:
            present[model] = len(replica_states)
        if reasons is not None and states[model][0] == "failed":
            reasons[model] = (info.get("message") or "")[-500:]
    return states


def _value(field) -> str:
    return str(getattr(field, "value", field))


def _serve_details() -> dict:
    """The controller's details as the plain dict it sends. `serve.status()` rebuilds them as
    pydantic models, which cloudpickles every deployment's autoscaling policy and router class:
    most of the ingress's CPU at one stream (py-spy profile: docs/benchmarks.md)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return client.get_serve_details() if client is not None else {}


class ModelStatus:
    def __init__(self, app_name: Optional[str], deployments: dict[str, str], ttl_s: float = 1.0,
                 stale_s: float = STALE_S):
        self.app_name = app_name
        self.deployments = deployments
        self._states: Refreshed[States] = Refreshed(self._read, ttl_s, stale_s)
        self.reasons: dict[str, str] = {}  # why a failed model failed (the controller's message)
        self.present: dict[str, int] = {}  # replicas in any state, stopping ones included

    async def states(self, fresh: bool = False, stale_ok: bool = False) -> States:
        """Up to `ttl_s` old; with `stale_ok` (the request path: a controller read costs ms)
        up to `stale_s` old while a new read runs behind; `fresh` waits for a read."""
        return await self._states.get(fresh, stale_ok)

    async def _read(self) -> States:
        try:
            reasons: dict[str, str] = {}
            present: dict[str, int] = {}
            states = await asyncio.to_thread(read_states, self.app_name, self.deployments, reasons, present)
            self.reasons, self.present = reasons, present
        except Exception:
            logger.warning("could not read model states from Ray Serve", exc_info=True)
            states = {model: ("unknown", 0) for model in self.deployments}
        return states


@dataclass(frozen=True)
class ModelView:
    """One model as the listing, the health views and the metrics see it."""

    state: str
    replicas: int
    live: dict = field(default_factory=dict)  # the replicas' reports combined: in_flight, rss_bytes, node_id...
    lifecycle: dict = field(default_factory=dict)  # ModelControl.views(): disabled, last_used, all replicas' memory
