"""The Grafana dashboard and the alert rules parse, and every AI Core metric they use exists."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from serve_app.ops.metrics import MetricsHub, ModelLoadEvent, QuotaEvent, RequestEvent
from serve_app.ops.model_metrics import render_model_metrics
from serve_app.ops.status import ModelView
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"


def _exported_names() -> set[str]:
    """Every series name AI Core exports, read from real renders of both metric sources."""
    hub = MetricsHub()
    hub.record([RequestEvent("/v1/completions", "m", 500, 0.5, 3, 4, 0.1, tokens_per_s=12.0,
                               error_type="server_error", error_code="backend_error"),
                ModelLoadEvent("m", True, 2.0), ModelLoadEvent("m", False, 0.1), QuotaEvent("k", "tokens-day", 0.5)])
    live = {"in_flight": 1, "queued": 0, "rss_bytes": 10, "load_time_s": 0.3, "cancelled": 0, "node_id": "n"}
    reports = [{"node_id": "n", "node_memory_total": 100, "node_memory_available": 40, "memory_alert": False}]
    view = ModelView("ready", 1, live, lifecycle={"reports": reports})
    text = (hub.render() + render_model_metrics({"m": view}, "m")).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def _used(exprs: list[str]) -> set[str]:
    return {name for e in exprs for name in re.findall(r"\baicore_[a-z_]+", e)}


def test_alert_rules_parse_and_use_real_metrics():
    rules = yaml.safe_load((CONFIGS / "prometheus-alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert {"AICoreHighErrorRate", "AICoreSlowFirstToken", "AICoreModelMemoryHigh", "AICoreModelFailed",
            "AICoreQuotaNearlyUsed"} <= names
    assert all(r["expr"] and r["labels"]["severity"] in ("warning", "critical") for r in alerts)
    used = _used([r["expr"] for r in alerts])
    assert used and used <= _exported_names(), used - _exported_names()


def test_promtool_checks_the_rules():
    promtool = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / ".tools" / "bin"))
    if promtool is None:
        pytest.fail("promtool is not installed (scripts/test.sh fetches it into .tools/bin)")
    result = subprocess.run([promtool, "check", "rules", str(CONFIGS / "prometheus-alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_parses_and_uses_real_metrics():
    dashboard = json.loads((CONFIGS / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = _used(exprs)
    assert {"aicore_model_resident_memory_bytes", "aicore_errors_total", "aicore_model_requests_in_flight",
            "aicore_generation_tokens_per_second_bucket", "aicore_model_state"} <= used
    assert used <= _exported_names(), used - _exported_names()


def test_promtool_checks_the_scrape_config_with_its_rules(tmp_path):
    promtool = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / ".tools" / "bin"))
    if promtool is None:
        pytest.fail("promtool is not installed (scripts/test.sh fetches it into .tools/bin)")
    (tmp_path / "aicore_key").write_text("test-key\n")
    config = (CONFIGS / "prometheus.yml").read_text()
    assert "/etc/prometheus/aicore_key" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/aicore_key", str(tmp_path / "aicore_key")))
    shutil.copy(CONFIGS / "prometheus-alerts.yml", tmp_path)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9][0-9]* rules found", result.stdout + result.stderr)
