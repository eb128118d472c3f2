"""Hot swap: edit one model's entry in models.json, run `python -m scripts.deploy` (serve deploy with
per-model revisions) against a running cluster; only that model's replica is replaced, its
in-flight stream finishes on the old replica, and the other model streams on undisturbed."""

import json
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from scripts.run_server import render_config
from scripts.serve_process import ROOT, free_port
from tests.integration.cluster import LocalCluster
from tests.integration.sse import stream_in_thread

DEFAULT, SWAPPED = "smollm2-135m-instruct", "gemma3-270m"
KEY = "swap-key-0123456789"


class SwapApp:
    """The shipped entries of `names` (one thread each) in a models file of their own, deployed with
    `scripts.deploy` on `cluster`."""

    def __init__(self, cluster: LocalCluster, folder, names=(DEFAULT, SWAPPED), key=KEY):
        self.cluster, self.key = cluster, key
        self.models_path = folder / "models.json"
        shipped = json.loads((ROOT / "models.json").read_text())["models"]
        self.models = {name: {**shipped[name], "threads": 1} for name in names}
        self.write()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.config = render_config("127.0.0.1", port, {"model_config_path": str(self.models_path)})

    def write(self):
        self.models_path.write_text(json.dumps({"models": self.models}))

    def deploy(self):
        done = subprocess.run([sys.executable, "-m", "scripts.deploy", "--config", str(self.config),
                               "--address", self.cluster.dashboard_url], cwd=ROOT, env=self.cluster.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    def entry(self, model):
        listing = httpx.get(self.base_url + "/api/v1/models", headers={"X-API-Key": self.key}, timeout=60).json()
        return next(m for m in listing["models"] if m["name"] == model)

    def wait(self, check, polls=600):
        for _ in range(polls):  # bounded: at most `polls` checks, 0.5 s apart
            try:
                if check():
                    return True
            except (httpx.HTTPError, ValueError, KeyError, StopIteration):
                pass
            time.sleep(0.5)
        return False


@contextmanager
def running_app(folder, names=(DEFAULT, SWAPPED), key=KEY):
    """A one-node cluster with the dashboard, the app deployed and every model ready."""
    cluster = LocalCluster(env={"API_KEYS": key})
    try:
        cluster.start_head(num_cpus=2, dashboard=True)
        app = SwapApp(cluster, folder, names, key)
        app.deploy()
        assert app.wait(lambda: all(app.entry(m)["state"] == "ready" for m in names))
        yield app
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("swap")) as app:
        yield app


def finished_cleanly(out) -> bool:
    chunks = [e for e in out["events"] if "choices" in e]
    return (out["status"] == 200 and not any("error" in e for e in out["events"])
            and chunks[-1]["choices"][0]["finish_reason"] == "length")


def test_one_model_is_replaced_while_both_stream(app):
    kept_pid, old_pid = app.entry(DEFAULT)["pid"], app.entry(SWAPPED)["pid"]
    kept_out, swapped_out = {}, {}
    kept = stream_in_thread(app.base_url, KEY, DEFAULT, 500, kept_out)
    swapped = stream_in_thread(app.base_url, KEY, SWAPPED, 300, swapped_out)

    app.models[SWAPPED] = {**app.models[SWAPPED], "description": "gemma3, swapped", "default_max_tokens": 7}
    app.write()
    app.deploy()
    assert app.wait(lambda: app.entry(SWAPPED)["description"] == "gemma3, swapped"
                    and app.entry(SWAPPED)["state"] == "ready" and app.entry(SWAPPED)["pid"] != old_pid)
    kept.join()
    swapped.join()
    assert finished_cleanly(swapped_out)  # the old replica finished its stream before it went
    assert finished_cleanly(kept_out)  # the other model never noticed
    assert app.entry(DEFAULT)["pid"] == kept_pid  # and was not restarted

    # The reload is in the audit log: by the deploy command, with the config's revision.
    def reloads():
        r = httpx.get(app.base_url + "/api/v1/audit", params={"action": "config.reload"},
                      headers={"X-API-Key": KEY}, timeout=60)
        return r.json()["data"]
    assert app.wait(lambda: reloads())
    [entry] = reloads()
    assert entry["actor_id"] == "scripts.deploy" and entry["actor_name"].startswith("config ")
    assert entry["outcome"] == "ok" and entry["target"] == "models.json"
    assert list(entry["changes"]) == [f"revision.{SWAPPED}"]

    # The new replica serves the new entry: no max_tokens given, the new default applies.
    r = httpx.post(app.base_url + "/v1/completions", headers={"X-API-Key": KEY}, timeout=300,
                   json={"model": SWAPPED, "prompt": "Hello", "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 7
