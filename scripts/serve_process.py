"""Start `serve run` on a copy of serve_config.yaml (own port, own settings), wait until ready, stop it.

Used by the integration tests and the benchmarks, so both drive the real app exactly as
`serve run serve_config.yaml` does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import httpx

from scripts.haproxy_mode import HAProxyRun, ingress_mode
from scripts.run_server import ensure_private_ray_token, render_config, server_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """`serve run` could not bind the port picked for it."""


class ServeProcess:
    def __init__(self, env: Optional[dict] = None, args: Optional[dict] = None, log_path: Optional[Path] = None,
                 plain: bool = False, host: str = "127.0.0.1", via_run_server: bool = False,
                 import_path: Optional[str] = None):
        """The app started as `scripts.run_server` starts it (Ray on loopback, the proxy trusting no
        X-Forwarded-For), or with `plain` as a bare `serve run` does: only `env` added to ours.
        `host`: where the API port listens (API_HOST); clients use 127.0.0.1 either way.
        `via_run_server`: run `python -m scripts.run_server` itself (README command one without its
        setup step), `args` passed as environment variables. `import_path`: another app in
        serve_config.yaml's place (the benchmarks' no-op)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # RAY_ADDRESS=local: always a private Ray instance, never a cluster already running here.
        ours = {"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", "RAY_ADDRESS": "local", **(env or {})}
        self.env = {**os.environ, **ours} if plain else server_env(ours, local_only=True)
        # INGRESS_MODE=haproxy (here or in the test run's environment) as scripts.run_server applies it.
        self.haproxy_mode = not plain and not via_run_server and ingress_mode(self.env) == "haproxy"
        self.via_run_server = via_run_server
        self.haproxy: Optional[HAProxyRun] = None
        self.plain = plain
        self.host = host
        self.args = args or {}
        self.import_path = import_path
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="aicore-serve-", suffix=".log")[1])
        self.proc: Optional[subprocess.Popen] = None

    def _config(self) -> Path:
        return render_config(self.host, self.port, self.args, import_path=self.import_path)

    def start(self, ready_models: tuple[str, ...] = (), timeout_s: float = 300,
              answering_only: bool = False, attempts: int = 3) -> "ServeProcess":
        """Wait until every model in `ready_models` (default: all) is ready, or with
        `answering_only` until the ingress answers at all.

        The port is picked free before `serve run` binds it, so another process (Ray starts many,
        on random ports) can take it in between: then the run fails to bind and is started again
        on a new port."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(ready_models, timeout_s, answering_only)
            except PortTaken:
                if attempt == attempts:
                    raise
                self.port = free_port()
                self.base_url = f"http://127.0.0.1:{self.port}"

    def _start_once(self, ready_models: tuple[str, ...], timeout_s: float, answering_only: bool) -> "ServeProcess":
        serve_bin = Path(sys.executable).parent / "serve"
        if not self.plain:
            ensure_private_ray_token()
        if self.via_run_server:
            self.config_path = None
            command = [sys.executable, "-m", "scripts.run_server"]
            env = {**self.env, "API_HOST": self.host, "API_PORT": str(self.port),
                   **{k.upper(): str(v) for k, v in self.args.items()}}
        else:
            self.config_path = self._config()
            command, env = [str(serve_bin), "run", str(self.config_path)], self.env
        if self.haproxy_mode and self.haproxy is None:
            self.haproxy = HAProxyRun(self.env)
            self.env.update(self.haproxy.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log()
                if f"Failed to bind to address '{self.host}:{self.port}'" in log:
                    try:  # whatever of its Ray instance is left in its session goes too
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    raise PortTaken(self.port)
                raise RuntimeError(f"serve run exited ({self.proc.returncode}); log: {self.log_path}\n{log[-3000:]}")
            try:
                states = httpx.get(self.base_url + "/api/v1/health", timeout=5).json().get("models", {})
                # Named models must be ready; otherwise every model settled (lazy ones may stay unloaded).
                settled = bool(states) and all(s in ("ready", "unloaded") for s in states.values())
                named = all(states.get(m) == "ready" for m in ready_models) if ready_models else settled
                if states and (answering_only or named):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"server not ready in {timeout_s}s; log: {self.log_path}\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM makes `serve run` shut down Serve and the Ray processes it started; then any HAProxy left."""
        if self.proc is not None and self.proc.poll() is None:
            if self.via_run_server:  # it passes SIGTERM on to `serve run` and cleans up after it
                self.proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.haproxy:  # HAProxy outlives Ray when Serve did not shut it down
            self.haproxy.stop()
            self.haproxy = None

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
