"""Updates without failed requests: while streaming clients and a steady request
rate run, directly and through the shipped nginx.conf, `scripts.deploy` applies a changed
models.json entry and then a new code revision (the whole app rebuilt). No request fails and no
stream is cut (scripts/update_drill.py counts both)."""

import pytest

from scripts.update_drill import Drill, Target, nginx_in_front, run_drill
from tests.integration.test_hot_swap import running_app

MODEL = "smollm2-135m-instruct"  # the packaged SmolLM2 GGUF, small
KEY = "drill-key-0123456789"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("drill"), (MODEL,), KEY) as app:
        yield app


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
