"""Updates without failed requests (issue 16 item 4): while streaming clients and a steady request
rate run, directly and through the shipped nginx.conf, `scripts.deploy` applies a changed
models.json entry and then a new code revision (the whole app rebuilt). No request fails and no
stream is cut (scripts/update_drill.py counts both)."""

import json

import pytest

from scripts.run_server import render_config
from scripts.serve_process import ROOT, free_port
from scripts.update_drill import Drill, Target, nginx_in_front, run_drill
from tests.integration.cluster import LocalCluster
from tests.integration.test_hot_swap import SwapApp

MODEL = "smollm2-135m-instruct"
KEY = "drill-key-0123456789"


class DrillApp(SwapApp):
    """One small model (the packaged SmolLM2 GGUF), on a cluster with a dashboard."""

    def __init__(self, cluster: LocalCluster, folder):
        self.cluster = cluster
        self.models_path = folder / "models.json"
        shipped = json.loads((ROOT / "models.json").read_text())["models"]
        self.models = {MODEL: {**shipped[MODEL], "threads": 1}}
        self.write()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.config = render_config("127.0.0.1", port, {"model_config_path": str(self.models_path)})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    cluster = LocalCluster(env={"API_KEYS": KEY})
    try:
        cluster.start_head(num_cpus=2, dashboard=True)
        app = DrillApp(cluster, tmp_path_factory.mktemp("drill"))
        app.deploy()
        assert app.wait(lambda: app.entry(MODEL)["state"] == "ready")
        yield app
    finally:
        cluster.stop()


def test_updates_under_streaming_load_lose_nothing(app):
    with nginx_in_front(app.base_url) as through_nginx:
        drill = Drill([Target("direct", app.base_url), through_nginx], KEY, MODEL, app.models_path,
                      ["--config", str(app.config), "--address", app.cluster.dashboard_url], app.cluster.env,
                      streams=4, rate=1.0, max_tokens=16, warmup_s=2, tail_s=3)
        result = run_drill(drill)
    assert result["error"] is None, result
    for name, counts in result["targets"].items():
        assert counts["broken_streams"] == 0 and counts["failed_requests"] == 0, (name, counts)
        assert counts["streams_ok"] > 0 and counts["requests_ok"] > 0, (name, counts)
    deploys = [e for e in result["events"] if e["event"] in ("deploy 1: changed models.json entry",
                                                            "deploy 2: new code revision")]
    assert len(deploys) == 2 and all(e["in_flight_streams"] > 0 for e in deploys), deploys  # under load
    assert "update drill" in app.entry(MODEL)["description"]  # the changed entry is served
