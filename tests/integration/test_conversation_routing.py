"""A GGUF model with two replicas: each conversation's turns reach one replica (the one keeping its KV,
deployments/routing.py), and when that replica's process dies its turns are served by the other.

Which replica served is read from the replicas' own reports (`served`, by process id) through the
cluster's store, as the ingress reads them; the app runs on a LocalCluster so that the test can
connect to it. Requests are sent one at a time, so a report's change names the replica."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from scripts.serve_process import ServeProcess
from tests.conftest import ROOT
from tests.integration.cluster import LocalCluster
from tests.integration.conftest import DEFAULT, KEY

APP = "ai-core"
SYSTEM = {"role": "system", "content": "You are a short-spoken assistant."}
TURNS = ("Hello, my name is {}.", "What is a good name for a cat?", "And for a dog?", "Thanks, bye.")

# Connects once, then prints {pid: served} of the model's replicas for each line it reads.
READER = """
import json, sys, ray
from deployments import lifecycle
ray.init(address=sys.argv[1], logging_level="ERROR")
for _ in sys.stdin:
    print(json.dumps({r["pid"]: r["served"] for r in lifecycle.read_reports(sys.argv[2], sys.argv[3])}), flush=True)
"""


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster(env={"API_KEYS": KEY, "CACHE_ENABLED": "false"})  # every turn reaches a replica
    try:
        yield cluster.start_head(num_cpus=2)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def app(cluster, tmp_path_factory):
    shipped = json.loads((ROOT / "models.json").read_text())["models"][DEFAULT]
    entry = {**shipped, "threads": 1, "context_length": 512, "parallel": 2, "num_cpus": 0.05,
             "autoscaling": {"min_replicas": 2, "max_replicas": 2}}
    models = tmp_path_factory.mktemp("routing") / "models.json"
    models.write_text(json.dumps({"models": {DEFAULT: entry}}))
    env = {k: cluster.env[k] for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_agent_register_timeout_ms")}
    server = ServeProcess(env=env, args={"model_config_path": str(models)})
    try:
        yield server.start(ready_models=(DEFAULT,))
    finally:
        server.stop()


class Served:
    """Requests served per replica process, from the replicas' reports."""

    def __init__(self, cluster: LocalCluster):
        self.proc = subprocess.Popen([sys.executable, "-c", READER, cluster.address, APP, DEFAULT], cwd=ROOT,
                                     env=cluster.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict[int, int]:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return {int(pid): served for pid, served in json.loads(self.proc.stdout.readline()).items()}

    def settled(self, total: int, without: int = 0, tries: int = 200) -> dict[int, int]:
        """The counts once those of every process but `without` add up to `total` (a replica
        publishes at the end of each request; a dead one's report lingers a few seconds)."""
        for _ in range(tries):  # bounded: 200 reads, 0.1 s apart
            counts = self.read()
            if sum(v for pid, v in counts.items() if pid != without) >= total:
                return counts
            time.sleep(0.1)
        return counts

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def served(cluster, app):
    reader = Served(cluster)
    yield reader
    reader.close()


def _turn(app, conversation: str, n: int, history: list) -> httpx.Response:
    """Turn `n` of a conversation: a session sends its new message, a bot the whole history."""
    message = {"role": "user", "content": TURNS[n].format(conversation)}
    body = {"max_tokens": 6, "temperature": 0}
    if conversation.startswith("session"):
        body.update(session_id=conversation, messages=[message])
    else:
        history.append(message)
        body.update(messages=[SYSTEM, *history])
    r = httpx.post(app.base_url + "/api/v1/chat", json=body, headers={"X-API-Key": KEY}, timeout=300)
    assert r.status_code == 200, r.text
    history.append({"role": "assistant", "content": r.json()["response"]})
    return r


def _converse(app, served, conversation: str, turns, history: list) -> int:
    """Run `turns` of the conversation; the one replica process that served all of them."""
    before = served.settled(0)
    for n in turns:
        _turn(app, conversation, n, history)
    after = served.settled(sum(before.values()) + len(turns))
    grew = {pid: after[pid] - before.get(pid, 0) for pid in after if after[pid] != before.get(pid, 0)}
    assert list(grew.values()) == [len(turns)], f"{conversation}: turns spread over {grew}"
    return next(iter(grew))


def test_each_conversation_stays_on_one_replica_and_moves_when_it_dies(app, served):
    for _ in range(600):  # bounded: 600 reads, 0.5 s apart, until the second replica has loaded too
        replicas = served.read()
        if len(replicas) == 2:
            break
        time.sleep(0.5)
    assert len(replicas) == 2, replicas
    # Sessions (the ingress names the conversation) and bots resending the whole history, until
    # both replicas hold some: rendezvous hashing spreads them, 16 all on one is 1 in 32768. Three
    # turns each: a router blind to conversations keeps one on a replica 1 time in 4.
    homes, histories = {}, {}
    for i in range(16):
        if len(homes) >= 4 and len(set(homes.values())) == 2:
            break
        conversation = f"{'session' if i % 2 == 0 else 'bot'}-{i}"
        histories[conversation] = []
        homes[conversation] = _converse(app, served, conversation, (0, 1, 2), histories[conversation])
    assert set(homes.values()) == set(replicas), homes

    # The replica holding the first conversation dies; its next turn and a newcomer's still work.
    conversation = next(iter(homes))
    dead = homes[conversation]
    os.kill(dead, signal.SIGKILL)
    counts = served.read()
    _turn(app, conversation, 3, histories[conversation])
    _turn(app, "bot-late", 0, [])
    after = served.settled(sum(v for pid, v in counts.items() if pid != dead) + 2, without=dead)
    assert sum(after.get(pid, 0) - counts.get(pid, 0) for pid in after if pid != dead) == 2, (counts, after)
