"""A real Ray cluster on this machine (one or two nodes), for the multi-node and hot-swap tests.

Every port is chosen free and bound to 127.0.0.1, the dashboard is off unless asked for, token authentication
is on (RAY_AUTH_MODE=token with a fresh RAY_AUTH_TOKEN), and each node keeps its files in its
own temp dir. Stopping kills only the process groups this helper started (never `ray stop`,
which would stop every Ray instance on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from scripts.run_server import server_env
from scripts.serve_process import free_port

RAY = str(Path(sys.executable).parent / "ray")


class LocalCluster:
    def __init__(self, env: Optional[dict] = None) -> None:
        """`env` goes to every node: Serve builds the app and runs replicas in the nodes' environment."""
        self.root = Path(tempfile.mkdtemp(prefix="aicore-rc-"))
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.env = server_env({
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(24),
            "RAY_ADDRESS": self.address,
            "PYTHONUNBUFFERED": "1",
            # A busy machine can take half a minute to start a node's agents (default 10 s).
            "RAY_agent_register_timeout_ms": "120000",
            **(env or {}),
        })
        self.groups: list[int] = []  # process group ids of the `ray start` calls

    def _start(self, name: str, args: list[str], attempts: int = 3) -> None:
        """`ray start`, tried again on failure: on a busy machine the raylet can give up on its
        agents (a fixed 15 s wait for their port files) before they have even imported."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(f"{name}-{attempt}", args)
            except RuntimeError:
                self._kill(self.groups.pop())
                if attempt == attempts:
                    raise

    def _start_once(self, name: str, args: list[str]) -> None:
        """`ray start` returns once the node runs; its daemons stay in the new session we made."""
        temp = self.root / name
        # Worker ports from a band below Linux's ephemeral range (where free_port() picks) and
        # above Ray's default 10002-19999, so they collide with neither.
        worker_low = 20000 + secrets.randbelow(60) * 200
        common = [
            "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + 199}",
        ]
        log = (self.root / f"{name}.log").open("w")
        proc = subprocess.Popen([RAY, "start", *args, *common], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc.pid)
        if proc.wait(timeout=300) != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{self.log(name)[-3000:]}")

    def start_head(self, num_cpus: int = 1, dashboard: bool = False) -> "LocalCluster":
        """`dashboard`: on 127.0.0.1 (`serve deploy` talks to it), at `self.dashboard_url`."""
        port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{port}"
        self._start("head", ["--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}",
                             f"--include-dashboard={'true' if dashboard else 'false'}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
                             f"--ray-client-server-port={free_port()}"])
        return self

    def add_worker(self, resources: dict, num_cpus: int = 1) -> None:
        self._start("worker", [f"--address={self.address}", f"--num-cpus={num_cpus}",
                               f"--resources={json.dumps(resources)}"])

    def nodes(self) -> list[dict]:
        """Alive nodes with their resources, read through the GCS (no dashboard needed)."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        while self.groups:
            self._kill(self.groups.pop())
        shutil.rmtree(self.root, ignore_errors=True)  # Ray's session files and logs of both nodes

    @staticmethod
    def _kill(group: int) -> None:
        """SIGTERM, then SIGKILL for what is left after 3 s: some of a node's processes outlive
        SIGTERM (every teardown waited out the 10 s it once had), and the node's files go with
        its folder anyway."""
        for sig, polls in ((signal.SIGTERM, 30), (signal.SIGKILL, 100)):
            if not _group_alive(group):
                return
            os.killpg(group, sig)
            for _ in range(polls):
                if not _group_alive(group):
                    return
                time.sleep(0.1)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's group now
        return False


