"""The lifecycle control plane: admin commands and replica reports, shared through Ray's GCS.

Three parties read and write small JSON records in Ray's internal key-value store (every Ray
process can reach it, on every node, without another service):

- the ingress writes a model's *control* record (`POST /api/v1/models/load|unload`);
- each model replica publishes its *report* (in flight, last used, memory) twice a second while it
  works and every 2 s while idle, and while it works reads the control record (a forced unload
  cancels its work);
- `ModelScalingPolicy`, the custom Ray Serve autoscaling policy of every model deployment, runs
  in the Serve controller and turns the control record and the idle clock into a replica count.
  The policies of one app share one read of all its records (two GCS calls, at most every
  0.5 s), not three calls per model per control loop: on a 2-core node every GCS round trip
  wakes two processes beside the model's threads.

Ray Serve still does the scaling itself (lazy load from zero, draining replicas it stops).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

NAMESPACE = "aicore"
REPORT_EVERY_S = 0.5  # while a replica has requests in flight
IDLE_REPORT_EVERY_S = 2.0  # while it has none (a request's start and end publish at once anyway)
REPORT_FRESH_S = 5.0  # a report older than this belongs to a replica that is gone
SHARED_READ_EVERY_S = 0.5  # the policies' shared read of an app's records

# Control modes. None: normal (lazy load, idle unload, `preload` floor).
UNLOADING = "unloading"  # draining: the ingress holds new requests, replicas finish (or cancel) theirs,
# and the policy scales to zero once Ray's request metrics read zero (scaling to zero earlier
# would let Ray's cold-start path start a new replica for the requests still counted)
UNLOADED = "unloaded"  # scale to zero now; the next request clears it and loads the model again
DISABLED = "disabled"  # scale to zero and refuse requests until an explicit load
LOADED = "loaded"  # load now; then the idle clock runs from the load


@dataclass(frozen=True)
class Control:
    mode: Optional[str] = None
    force: bool = False
    at: float = field(default_factory=time.time)


def _kv():
    from ray.experimental import internal_kv

    return internal_kv


def _connected() -> bool:
    """Outside a Ray process (unit tests, tools) there is no store: no records, nothing to do."""
    try:
        return bool(_kv()._internal_kv_initialized())
    except Exception:
        return False


def _control_key(app: str, model: str) -> bytes:
    return f"{app}/control/{model}".encode()


def _report_prefix(app: str, model: str) -> bytes:
    return f"{app}/report/{model}/".encode()


def read_control(app: str, model: str) -> Control:
    if not _connected():
        return Control(mode=None, at=0.0)
    raw = _kv()._internal_kv_get(_control_key(app, model), namespace=NAMESPACE)
    return Control(**json.loads(raw)) if raw else Control(mode=None, at=0.0)


def write_control(app: str, model: str, control: Optional[Control]) -> None:
    if not _connected():
        raise RuntimeError("model control needs the Ray cluster (run under Ray Serve)")
    if control is None or control.mode is None:
        _kv()._internal_kv_del(_control_key(app, model), namespace=NAMESPACE)
    else:
        _kv()._internal_kv_put(_control_key(app, model), json.dumps(asdict(control)).encode(),
                               overwrite=True, namespace=NAMESPACE)


def publish_report(app: str, model: str, replica: str, report: dict) -> None:
    _kv()._internal_kv_put(_report_prefix(app, model) + replica.encode(),
                           json.dumps({**report, "reported_at": time.time()}).encode(),
                           overwrite=True, namespace=NAMESPACE)


def forget_report(app: str, model: str, replica: str) -> None:
    _kv()._internal_kv_del(_report_prefix(app, model) + replica.encode(), namespace=NAMESPACE)


def _read_prefix(prefix: bytes) -> dict[bytes, bytes]:
    """Every record under `prefix`: one key listing and one multi-get (two GCS calls)."""
    keys = _kv()._internal_kv_list(prefix, namespace=NAMESPACE) or []
    if not keys:
        return {}
    client = _kv().internal_kv_get_gcs_client()
    return {k: v for k, v in client.internal_kv_multi_get(keys, namespace=NAMESPACE.encode()).items() if v}


def _fresh(raw: bytes, now: float) -> Optional[dict]:
    report = json.loads(raw)
    return report if now - report.get("reported_at", 0) < REPORT_FRESH_S else None


def read_reports(app: str, model: str) -> list[dict]:
    """Fresh reports of the model's replicas (stopping replicas included while they report)."""
    if not _connected():
        return []
    now = time.time()
    return [r for raw in _read_prefix(_report_prefix(app, model)).values() if (r := _fresh(raw, now))]


def read_app_records(app: str) -> tuple[dict[str, Control], dict[str, list[dict]]]:
    """Every model's control record and fresh reports of one app, in one read."""
    if not _connected():
        return {}, {}
    controls: dict[str, Control] = {}
    reports: dict[str, list[dict]] = {}
    now, prefix = time.time(), f"{app}/".encode()
    for key, raw in _read_prefix(prefix).items():
        kind, _, rest = key[len(prefix):].decode().partition("/")  # control/<model>, report/<model>/<replica>
        if kind == "control":
            controls[rest] = Control(**json.loads(raw))
        elif kind == "report" and "/" in rest and (report := _fresh(raw, now)):
            reports.setdefault(rest.rsplit("/", 1)[0], []).append(report)
    return controls, reports


class _SharedRead:
    """One read of an app's records for every policy in this process (the Serve controller)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._at: dict[str, float] = {}
        self._records: dict[str, tuple[dict, dict]] = {}

    def model(self, app: str, model: str) -> tuple[Control, list[dict]]:
        with self._lock:
            if time.monotonic() - self._at.get(app, -1e9) >= SHARED_READ_EVERY_S:
                self._records[app] = read_app_records(app)  # raises: the caller keeps its last input
                self._at[app] = time.monotonic()
            controls, reports = self._records[app]
        return controls.get(model, Control(mode=None, at=0.0)), reports.get(model, [])


_SHARED_SLOT = "_aicore_app_records"


def read_model_records(app: str, model: str) -> tuple[Control, list[dict]]:
    """A model's control record and fresh reports, from its app's shared read.

    Serve pickles each deployment's policy by value, so every policy gets its own copy of this
    module's globals: the shared reader lives in a process-wide slot (on `sys`) instead."""
    shared = getattr(sys, _SHARED_SLOT, None)
    if shared is None:
        shared = _SharedRead()
        setattr(sys, _SHARED_SLOT, shared)
    return shared.model(app, model)


_SUMMED = ("in_flight", "queued", "served", "cancelled", "rss_bytes")


def combine_reports(reports: list[dict]) -> dict:
    """One model's figures over its replicas: counts and memory summed, the rest (load time, pid,
    node, adapters) from the newest replica."""
    if not reports:
        return {}
    combined = dict(max(reports, key=lambda r: r.get("started_at", 0)))
    for key in _SUMMED:
        combined[key] = sum(r.get(key) or 0 for r in reports)
    combined["last_used"] = max(r.get("last_used") or 0 for r in reports)
    return combined


class ModelScalingPolicy:
    """Ray Serve autoscaling policy of one model deployment (runs in the Serve controller).

    Ray's bounds are 0..max_replicas; this policy adds the model's floor (1 for the default
    model and `preload`), the idle timeout (keep a replica until `idle_timeout_s` without
    requests) and the admin's control record. Ray applies its own delays after it, so the
    deployment is given `downscale_to_zero_delay_s=0`: the idle timeout is counted here.
    """

    def __init__(self, model: str, floor: int, idle_timeout_s: float):
        from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

        self.model = model
        self.floor = floor
        self.idle_timeout_s = idle_timeout_s
        self._queue_policy = replica_queue_length_autoscaling_policy
        self._control = Control(mode=None, at=0.0)
        self._reports: list[dict] = []

    def _refresh(self, app: str) -> None:
        """The control record and the replicas' reports (the app's shared read, at most every 0.5 s)."""
        try:
            self._control, self._reports = read_model_records(app, self.model)
        except Exception:  # the GCS briefly unreachable: keep the last decision's input
            pass

    def __call__(self, ctx) -> tuple[int, dict[str, Any]]:
        """Idleness comes from the replicas' reports (requests in flight, the last request): Ray's
        request counts are a mean over a window and say nothing of a stream that outlives it."""
        state = dict(ctx.policy_state or {})
        now = time.time()
        self._refresh(ctx.app_name or "")
        control, reports = self._control, self._reports
        busy = any(r.get("in_flight") for r in reports)
        if control.mode in (DISABLED, UNLOADED):
            return 0, state
        if control.mode == UNLOADING:  # drained when no replica works and Ray counts no request
            return (0 if not busy and ctx.total_num_requests == 0 else ctx.target_num_replicas), state
        desired, queue_state = self._queue_policy(ctx)
        state.update(queue_state or {})
        desired = max(math.ceil(desired), self.floor)
        if desired == 0:
            last = max([r.get("last_used") or 0.0 for r in reports] + [control.at if control.mode == LOADED else 0.0])
            recent = now - last < self.idle_timeout_s
            starting = ctx.current_num_replicas > 0 and not reports  # no report yet: just loaded
            if ctx.current_num_replicas > 0 and (busy or recent or starting):
                desired = 1
            elif control.mode == LOADED and now - control.at < self.idle_timeout_s:
                desired = 1  # an explicit load starts a replica
        return desired, state
