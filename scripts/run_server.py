"""Run `serve run` with API_HOST / API_PORT applied to serve_config.yaml, then hand over to it.

Ray Serve reads host and port from the config file only; this renders a copy when the
environment asks for other values, so the plain `serve run serve_config.yaml` and this
script start the same app. This script also starts Ray the safe way (LOCAL_ONLY_ENV,
PROXY_ENV: docs/security.md), which a plain `serve run` cannot do by itself.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from core.settings import Settings
from scripts.app_args import app_args
from scripts.haproxy_mode import HAProxyRun
from serve_app.http.proxy_http import IMPORT_PATH as PROXY_CALLBACK

ROOT = Path(__file__).resolve().parent.parent

# Ray wakes every process many times a second for bookkeeping; on a 2-4 core VPS each wake-up
# preempts an inference thread. These slow the bookkeeping, not the requests (see docs/benchmarks.md).
# Values already in the environment win.
QUIET_RAY_ENV = {
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "5000",  # Serve's own replica metrics (default 100 ms)
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",  # controller reconcile loop (default 0.1 s)
    "RAY_USAGE_STATS_ENABLED": "0",
    # Request counts reach the autoscaler every second (default 10 s): an unload waits for them.
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "HF_HUB_OFFLINE": "1",
    # Ray starts every worker (model replicas, ingress, proxy) at nice 15, so any nice-0 process
    # (GCS, raylet, dashboard, Redis, nginx, the clients) preempts the llama.cpp threads, and one
    # preempted thread stalls the other at the next barrier (measured: docs/benchmarks.md).
    "RAY_worker_niceness": "0",
    # Ray's log monitor re-lists the log folder on every 0.1 s pass while it holds < 1000 files;
    # with these it looks for new files every 2 s (known files are still read every 0.1 s, and a new
    # file is read from its start). This halves the log monitor's idle CPU (docs/benchmarks.md).
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "LOG_NAME_UPDATE_INTERVAL_S": "2",
}


# Set whatever the environment says: only TRUSTED_PROXIES decides who the client is,
# so Ray's HTTP proxy (uvicorn) must believe no X-Forwarded-For (serve_app/http/proxy_headers.py).
# Ray's proxy also bounds what it buffers before the app sees it: a request head's arrival time
# and size (HEADER_TIMEOUT_S, MAX_HEADER_BYTES: serve_app/http/proxy_http.py) and a WebSocket
# message's size (WS_MAX_FRAME_BYTES; uvicorn's ws_max_size is 16 MiB unless set: proxy_ws.py).
# Applies to every Ray process this project starts, one node or a cluster.
PROXY_ENV = {"FORWARDED_ALLOW_IPS": "none", "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_CALLBACK}

# The single-node run: nothing of Ray on the network. With "cluster" mode off (as Ray does on
# macOS and Windows) the node's IP is 127.0.0.1, so the GCS, raylet, object manager, agents and
# every worker bind loopback; the dashboard binds 127.0.0.1 by default and the Ray client server
# is not started by a local `serve run`. Token authentication stays on (Ray's default for a new
# local cluster, forced here so a stray RAY_AUTH_MODE=disabled cannot turn it off). Only the
# API port listens where API_HOST says. Never for `ray start` of a multi-node cluster.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def server_env(extra: dict | None = None, local_only: bool = False) -> dict:
    """The environment of a Ray start: quiet defaults < os.environ < `extra` < the safety settings."""
    return {**QUIET_RAY_ENV, **os.environ, **(extra or {}), **PROXY_ENV, **(LOCAL_ONLY_ENV if local_only else {})}


def ensure_private_ray_token() -> Path:
    """Ray writes ~/.ray/auth_token with the default umask (often world-readable): create it first,
    readable by its owner only, when it does not exist yet."""
    path = Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another start made it meanwhile
            return path
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # as `ray get-auth-token --generate` makes it
    elif path.stat().st_mode & 0o077:
        print(f"WARNING: {path} (Ray's cluster token) is readable by other users: chmod 600 it.", file=sys.stderr)
    return path


def render_config(host: str, port: int, args: dict | None = None, source: Path = ROOT / "serve_config.yaml",
                  import_path: str | None = None) -> Path:
    """`import_path`: another app with the same Serve settings (the benchmarks' no-op)."""
    config = yaml.safe_load(source.read_text())
    config["http_options"].update(host=host, port=port)
    config["applications"][0].setdefault("args", {}).update(args or {})
    if import_path:
        config["applications"][0]["import_path"] = import_path
    if config == yaml.safe_load(source.read_text()):
        return source
    fd, name = tempfile.mkstemp(prefix="aicore-serve-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    return Path(name)


def _app_args(settings: Settings, source: Path = ROOT / "serve_config.yaml") -> dict:
    """The arguments `scripts.deploy` renders (models file, model set, code revision); none when the
    models file does not load (the app's build then says why)."""
    from deployments.config import load_models_file

    named = (yaml.safe_load(source.read_text())["applications"][0].get("args") or {}).get("model_config_path")
    path = named or settings.model_config_path  # a file the config names wins, as in the app's build
    try:
        models = load_models_file(settings.resolve(path)).models
    except Exception:
        return {}
    return app_args(path, models)


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as error:  # e.g. a short API key: say why, without a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if not settings.api_keys:
        print("WARNING: API_KEYS is empty: every endpoint except /api/v1/health will answer 401.", file=sys.stderr)
    config = render_config(settings.api_host, settings.api_port, _app_args(settings))
    serve = Path(sys.executable).parent / "serve"
    os.chdir(ROOT)
    ensure_private_ray_token()
    argv = [str(serve), "run", str(config), *sys.argv[1:]]
    if settings.ingress_mode == "haproxy":
        sys.exit(run_with_haproxy(argv))
    os.execve(str(serve), argv, server_env(local_only=True))  # proxy mode: `serve run` takes this process


def run_with_haproxy(argv: list[str]) -> int:
    """`serve run` in HAProxy mode as a child: when it ends, however it ends, so does HAProxy
    (it outlives Ray otherwise: scripts/haproxy_mode.py)."""
    haproxy = HAProxyRun(os.environ)
    try:
        child = subprocess.Popen(argv, env=server_env(haproxy.env, local_only=True))

        def forward(signum, _frame):
            child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        # Ctrl-C reaches `serve run` from the terminal itself (same process group); a second
        # SIGINT from here would cut its shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return child.wait()
    finally:
        haproxy.stop()


if __name__ == "__main__":
    main()
