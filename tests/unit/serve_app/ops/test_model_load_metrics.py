"""Model loads reach the metrics hub (ok and failed), and the queued gauge is rendered per model and node."""

import asyncio
import logging

import pytest

from deployments.config import parse_models
from deployments.model_deployment import ModelDeployment, ReplicaContext
from deployments.weights import WeightsNotFound
from serve_app.ops.metrics import MetricsHub, ModelLoadEvent, report_load
from serve_app.ops.model_metrics import render_model_metrics
from serve_app.ops.status import ModelView


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def call():
            return self.fn(*args)
        return call()


class LocalHub:
    """A MetricsHub called the way a DeploymentHandle is (`hub.record.remote(events)`)."""

    def __init__(self):
        self.hub = MetricsHub()
        self.record = _Method(self.hub.record)


class DownHub:
    class record:
        @staticmethod
        def remote(events):
            raise ConnectionError("hub unreachable")


def _sample(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.fixture
def aicore_logger():
    """ModelDeployment configures the `aicore` logger; put it back for the other tests."""
    logger = logging.getLogger("aicore")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_hub_counts_loads_by_outcome_and_times_the_successful_ones():
    hub = MetricsHub()
    hub.record([ModelLoadEvent("a", True, 1.5), ModelLoadEvent("a", True, 3.0), ModelLoadEvent("a", False, 0.2),
                ModelLoadEvent("b", True, 0.4)])
    text = hub.render().decode()
    assert "# TYPE aicore_model_loads_total counter" in text
    assert _sample(text, 'aicore_model_loads_total{model="a",outcome="ok"}') == 2
    assert _sample(text, 'aicore_model_loads_total{model="a",outcome="failed"}') == 1
    assert _sample(text, 'aicore_model_loads_total{model="b",outcome="ok"}') == 1
    assert "# TYPE aicore_model_load_duration_seconds histogram" in text
    assert _sample(text, 'aicore_model_load_duration_seconds_count{model="a"}') == 2  # failed loads not timed
    assert _sample(text, 'aicore_model_load_duration_seconds_sum{model="a"}') == 4.5
    assert _sample(text, 'aicore_model_load_duration_seconds_bucket{le="2.0",model="a"}') == 1


def test_a_hub_that_does_not_answer_does_not_raise(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("aicore"), "propagate", True)  # configure_logging may have turned it off
    asyncio.run(report_load(DownHub(), ModelLoadEvent("a", True, 1.0)))
    assert "could not report the load of model a" in caplog.text


def test_a_failed_load_is_reported_before_the_replica_fails(tmp_path, aicore_logger):
    config = parse_models({"models": {"m": {"type": "gguf", "path": "missing.gguf"}}}).models["m"]
    hub = LocalHub()
    replica = ModelDeployment.__new__(ModelDeployment)  # as Ray Serve does: __init__ is async
    with pytest.raises(WeightsNotFound):
        asyncio.run(replica.__init__("m", config, ReplicaContext(cache_dir=str(tmp_path)), hub))
    text = hub.hub.render().decode()
    assert _sample(text, 'aicore_model_loads_total{model="m",outcome="failed"}') == 1
    assert _sample(text, 'aicore_model_loads_total{model="m",outcome="ok"}') == 0


def test_queued_gauge_per_model_and_node():
    live = {"in_flight": 3, "queued": 2, "load_time_s": 0.5, "node_id": "n1"}
    views = {"a": ModelView("ready", 1, live), "b": ModelView("unloaded", 0)}
    text = render_model_metrics(views, "a").decode()
    assert "# TYPE aicore_model_requests_queued gauge" in text
    assert 'aicore_model_requests_queued{model="a",node="n1"} 2.0' in text
    assert 'aicore_model_requests_in_flight{model="a",node="n1"} 3.0' in text
    assert 'aicore_model_replica_load_duration_seconds{model="a",node="n1"} 0.5' in text
    assert 'model="b"' not in text.split("# HELP aicore_model_requests_queued")[1].split("# HELP")[0]
