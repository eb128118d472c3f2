"""Explicit load/unload, the memory budget and LRU eviction, from the ingress.

The ingress writes a model's control record (deployments/lifecycle.py); the model's autoscaling
policy in the Serve controller acts on it and Ray Serve starts or stops replicas. Requests for a
model being unloaded wait here until it is gone, then load it again (lazy load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional

from core.errors import InsufficientMemory, ModelDisabled, ModelUnavailable
from core.settings import Settings
from deployments import lifecycle
from deployments.lifecycle import Control
from deployments.memory import node_memory, parse_size
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.ops.refreshed import Refreshed
from serve_app.ops.status import ModelStatus, ModelView

logger = logging.getLogger("aicore.lifecycle")

POLL_S = 0.2
CONTROL_TTL_S = 0.5


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ModelControl:
    def __init__(self, router: ModelRouter, status: ModelStatus, settings: Settings,
                 footprints: dict[str, Optional[int]]):
        self.router = router
        self.status = status
        self.settings = settings
        self.footprints = footprints
        self.app = getattr(status, "app_name", None) or ""
        self._controls: dict[str, Refreshed[Control]] = {}
        self._last_used: dict[str, float] = {}  # requests this ingress replica routed
        self._budget_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    # -- shared records -------------------------------------------------------------------

    def _control_of(self, model: str) -> Refreshed[Control]:
        if model not in self._controls:
            self._controls[model] = Refreshed(lambda: asyncio.to_thread(lifecycle.read_control, self.app, model),
                                              CONTROL_TTL_S)
        return self._controls[model]

    async def control(self, model: str, fresh: bool = False, stale_ok: bool = False) -> Control:
        """A GCS read; with `stale_ok` off the caller's path while the copy is under refreshed.STALE_S
        old (serve_app/ops/refreshed.py)."""
        return await self._control_of(model).get(fresh, stale_ok)

    async def _set(self, model: str, control: Optional[Control]) -> None:
        await asyncio.to_thread(lifecycle.write_control, self.app, model, control)
        self._control_of(model).set(control or Control(mode=None, at=0.0))

    async def reports(self, model: str) -> list[dict]:
        return await asyncio.to_thread(lifecycle.read_reports, self.app, model)

    async def replicas(self, model: str) -> tuple[str, int]:
        return (await self.status.states(fresh=True)).get(model, ("unknown", 0))

    def budget(self) -> int:
        if self.settings.model_memory_budget:
            return parse_size(self.settings.model_memory_budget)
        total, _ = node_memory()
        return max(0, total - parse_size(self.settings.memory_headroom))

    def last_used(self, model: str, reports: list[dict]) -> Optional[float]:
        times = [r["last_used"] for r in reports if r.get("last_used")] + [self._last_used.get(model, 0.0)]
        return max(times) or None

    async def views(self) -> dict[str, ModelView]:
        """Serve's states plus what the replicas report (never a call to a replica: that would
        count as use and keep an idle model loaded): `unloading` while an unload is in progress,
        disabled, last use, in flight and memory summed over the replicas, why it failed."""
        states = await self.status.states()
        out = {}
        for name in self.router.entries:
            state, running = states.get(name, ("unknown", 0))
            control = await self.control(name)
            reports = await self.reports(name) if self.status.present.get(name, running) else []
            if running and control.mode in (lifecycle.UNLOADING, lifecycle.UNLOADED, lifecycle.DISABLED):
                state = "unloading"
            live = lifecycle.combine_reports(reports)
            out[name] = ModelView(state, running, live=live, lifecycle={
                "disabled": control.mode == lifecycle.DISABLED,
                "last_used": self.last_used(name, reports),
                "resident_memory_bytes": live.get("rss_bytes"),
                "footprint_bytes": self.footprints.get(name),
                "reason": self.status.reasons.get(name) if state == "failed" else None,
                "reports": reports,
            })
        return out

    # -- the request path -----------------------------------------------------------------

    async def refuse_disabled(self, entry: ModelEntry) -> Control:
        """A disabled model answers 503 `model_disabled`, from its replicas and from the response
        cache alike (a cache hit runs only this check: it neither loads the model nor counts as its use)."""
        control = await self.control(entry.name, stale_ok=True)
        if control.mode == lifecycle.DISABLED:
            raise ModelDisabled(f"model {entry.name!r} is disabled by an administrator; "
                                "POST /api/v1/models/load enables it")
        return control

    async def before_request(self, entry: ModelEntry) -> None:
        """Refuse a disabled model, wait out an unload in progress, check the budget before a
        lazy load."""
        name = entry.name
        self._last_used[name] = time.time()
        control = await self.refuse_disabled(entry)
        if control.mode in (lifecycle.UNLOADING, lifecycle.UNLOADED):
            await self._wait_unloaded(name)
            await self._set(name, None)  # this request loads it again
        state, running = (await self.status.states(stale_ok=True)).get(name, ("unknown", 0))
        if running == 0 and state != "loading":
            await self.ensure_fits(name)

    async def _wait_unloaded(self, name: str) -> None:
        async def over() -> bool:
            control = await self.control(name, fresh=True)
            if control.mode == lifecycle.UNLOADED:
                return await self._gone(name)
            return control.mode != lifecycle.UNLOADING

        if not await _poll(over, self.settings.drain_timeout_s + self.settings.request_timeout_s):
            raise ModelUnavailable(f"model {name!r} is still being unloaded")

    async def _gone(self, name: str) -> bool:
        """No replica process left (starting and stopping ones count too)."""
        await self.replicas(name)  # refreshes status.present
        return self.status.present.get(name, 0) == 0

    # -- the memory budget ----------------------------------------------------------------

    async def ensure_fits(self, name: str) -> None:
        need = self.footprints.get(name)
        if not need:
            return  # unknown footprint: Ray's own memory accounting still applies
        async with self._budget_lock:
            budget = self.budget()
            states = await self.status.states(fresh=True)
            held = {m: (self.footprints.get(m) or 0) * max(n, 1 if s == "loading" else 0)
                    for m, (s, n) in states.items() if m != name}
            used = sum(held.values())
            if used + need <= budget:
                return
            entry = self.router.entries.get(name)
            eviction = (entry.config.eviction if entry else None) or self.settings.model_eviction
            if eviction == "lru":
                for victim in await self._eviction_order(name, held):
                    logger.warning("evicting model %s (least recently used) to load %s", victim, name)
                    await self.unload(victim)
                    used -= held[victim]
                    if used + need <= budget:
                        return
            loaded = ", ".join(f"{m} {_gib(b)}" for m, b in held.items() if b) or "none"
            raise InsufficientMemory(
                f"model {name!r} needs {_gib(need)} but only {_gib(max(0, budget - used))} of the "
                f"{_gib(budget)} model memory budget is free (loaded: {loaded}); unload a model "
                "(POST /api/v1/models/unload) or configure eviction \"lru\"", param="model")

    async def _eviction_order(self, name: str, held: dict[str, int]) -> list[str]:
        """Idle loaded models, least recently used first; never the default model."""
        candidates = []
        for model, size in held.items():
            if not size or model == self.router.default_model:
                continue
            reports = await self.reports(model)
            if any(r.get("in_flight") for r in reports):  # replicas report at once when one starts or ends
                continue
            candidates.append((self.last_used(model, reports) or 0.0, model))
        return [model for _, model in sorted(candidates)]

    # -- admin commands -------------------------------------------------------------------

    async def load(self, name: str, wait: bool = True) -> tuple[str, int]:
        """Load now (enables a disabled model); returns (state, replicas)."""
        state, running = await self.replicas(name)
        control = await self.control(name, fresh=True)
        if running > 0 and control.mode not in (lifecycle.UNLOADING, lifecycle.UNLOADED):
            if control.mode == lifecycle.DISABLED:
                await self._set(name, None)
            return state, running
        if control.mode in (lifecycle.UNLOADING, lifecycle.UNLOADED):
            await self._wait_unloaded(name)
        await self.ensure_fits(name)
        await self._set(name, Control(mode=lifecycle.LOADED))
        self._last_used[name] = time.time()
        if not wait:
            return "loading", 0
        async def ready() -> bool:
            state, _ = await self.replicas(name)
            if state == "failed":
                raise ModelUnavailable(f"model {name!r} failed to load; see the Ray Serve logs")
            return state == "ready"

        if not await _poll(ready, self.settings.request_timeout_s):
            raise ModelUnavailable(f"model {name!r} did not load within {self.settings.request_timeout_s:g}s")
        return await self.replicas(name)

    def start_unload(self, name: str, force: bool = False, disable: bool = False) -> None:
        task = asyncio.create_task(self.unload(name, force=force, disable=disable))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def unload(self, name: str, force: bool = False, disable: bool = False) -> tuple[str, int]:
        """Drain (or with `force` cancel) in-flight requests, then scale to zero. Idempotent."""
        final = Control(mode=lifecycle.DISABLED if disable else lifecycle.UNLOADED)
        state, running = await self.replicas(name)
        if running == 0 and state != "loading":
            if disable:
                await self._set(name, final)
            return "unloaded", 0
        await self._set(name, Control(mode=lifecycle.UNLOADING, force=force))
        if not await _poll(lambda: self._gone(name), self.settings.drain_timeout_s) and not force:
            logger.warning("unload of %s: requests still running after DRAIN_TIMEOUT_S %ss; cancelling them",
                           name, self.settings.drain_timeout_s)
            await self._set(name, Control(mode=lifecycle.UNLOADING, force=True))
            await _poll(lambda: self._gone(name), self.settings.drain_timeout_s)
        await self._set(name, final)
        state, running = await self.replicas(name)
        if running:
            raise ModelUnavailable(f"model {name!r} did not unload in time; see the Ray Serve logs")
        return "unloaded", 0


async def _poll(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """Call `check` every POLL_S until it says True (-> True) or `timeout_s` passes (-> False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(POLL_S)
    return False
