"""Two Ray nodes on this machine: a model pinned by a custom resource runs on the worker node.

A head node (ingress, controller) and, later, a worker node started with
`--resources='{"worker_node": 1}'`, token authentication on. The app is deployed with `serve run`
against the cluster's address before the worker exists: readiness answers 503 while the pinned
default model cannot be placed, then 200 once the worker joins and its replica loads there.
"""

import json
import time

import httpx
import pytest

from scripts.serve_process import ServeProcess
from tests.conftest import ROOT
from tests.integration.cluster import LocalCluster
from tests.integration.conftest import DEFAULT, KEY


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster(env={"API_KEYS": KEY})  # settings live in the nodes' environment
    try:
        yield cluster.start_head(num_cpus=2)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def pinned_app(cluster, tmp_path_factory):
    shipped = json.loads((ROOT / "models.json").read_text())["models"][DEFAULT]
    models = tmp_path_factory.mktemp("cluster") / "models.json"
    models.write_text(json.dumps({"models": {DEFAULT: {**shipped, "threads": 1, "resources": {"worker_node": 1}}}}))
    env = {k: cluster.env[k] for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_agent_register_timeout_ms")}
    server = ServeProcess(env=env, args={"model_config_path": str(models)})
    try:
        yield server.start(answering_only=True)
    finally:
        server.stop()


def _poll_ready(base_url: str, want: int, tries: int = 600) -> httpx.Response:
    for _ in range(tries):  # bounded: 600 polls, each at most 5 s
        r = httpx.get(base_url + "/api/v1/health/ready", timeout=5)
        if r.status_code == want:
            return r
        time.sleep(0.5)
    return r


def test_pinned_model_waits_for_its_node_then_serves_from_it(cluster, pinned_app):
    base = pinned_app.base_url
    # No node offers `worker_node` yet: the model cannot be placed, the load balancer is told to wait.
    r = httpx.get(base + "/api/v1/health/ready", timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["status"] == "not_ready" and r.json()["models"][DEFAULT] != "ready"
    assert httpx.get(base + "/api/v1/health", timeout=30).status_code == 200  # alive all the same

    cluster.add_worker({"worker_node": 1}, num_cpus=1)
    r = _poll_ready(base, 200)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["default_model"], body["models"], body["reasons"]) == (
        "ready", DEFAULT, {DEFAULT: "ready"}, [])

    nodes = cluster.nodes()
    assert len(nodes) == 2
    worker = next(n["id"] for n in nodes if "worker_node" in n["resources"])
    head = next(n["id"] for n in nodes if "worker_node" not in n["resources"])
    headers = {"X-API-Key": KEY}
    r = httpx.get(base + "/api/v1/models", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    listing = r.json()["models"]
    assert listing[0]["name"] == DEFAULT and listing[0]["node_id"] == worker != head

    answer = httpx.post(base + "/api/v1/generate", headers=headers, timeout=120,
                        json={"prompt": "The capital of France is", "max_tokens": 6})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == DEFAULT and answer.json()["response"].strip()
