"""Run `serve run` with API_HOST / API_PORT applied to serve_config.yaml, then hand over to it.

Ray Serve reads host and port from the config file only; this renders a copy when the
environment asks for other values, so the plain `serve run serve_config.yaml` and this
script start the same app.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

from serve_app.settings import Settings

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
}


def server_env(extra: dict | None = None) -> dict:
    return {**QUIET_RAY_ENV, **os.environ, **(extra or {})}


def render_config(host: str, port: int, args: dict | None = None, source: Path = ROOT / "serve_config.yaml") -> Path:
    config = yaml.safe_load(source.read_text())
    config["http_options"].update(host=host, port=port)
    config["applications"][0].setdefault("args", {}).update(args or {})
    if config == yaml.safe_load(source.read_text()):
        return source
    fd, name = tempfile.mkstemp(prefix="aicore-serve-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    return Path(name)


def main() -> None:
    settings = Settings()
    if not settings.bootstrap_keys():
        print("WARNING: API_KEYS is empty: every endpoint except /api/v1/health will answer 401.", file=sys.stderr)
    config = render_config(settings.api_host, settings.api_port)
    serve = Path(sys.executable).parent / "serve"
    os.chdir(ROOT)
    os.execve(str(serve), [str(serve), "run", str(config), *sys.argv[1:]], server_env())


if __name__ == "__main__":
    main()
