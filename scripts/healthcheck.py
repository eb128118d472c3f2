"""Container health check that also restarts: Docker marks a container unhealthy but restarts it
only when it exits. Exit 0 when the URL answers 200; otherwise exit 1 and count the failure in a
file, and after `--restart-after` failures in a row send SIGTERM to `--pid` (default 1: the
container's init, `init: true` in docker-compose.yml), so the container exits and its restart
policy starts it again.

    python -m scripts.healthcheck --url http://127.0.0.1:8000/api/v1/health --restart-after 3
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path


def healthy(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check(url: str, state: Path, restart_after: int, pid: int, timeout_s: float = 5) -> int:
    if healthy(url, timeout_s):
        state.unlink(missing_ok=True)
        return 0
    try:
        failures = int(state.read_text()) + 1
    except (OSError, ValueError):
        failures = 1
    if restart_after and failures >= restart_after:
        print(f"{failures} failed checks of {url} in a row: stopping pid {pid} to restart", file=sys.stderr)
        state.unlink(missing_ok=True)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as error:
            print(f"could not stop pid {pid}: {error}", file=sys.stderr)
    else:
        state.write_text(str(failures))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/api/v1/health")
    parser.add_argument("--restart-after", type=int, default=3, help="0: never restart")
    parser.add_argument("--pid", type=int, default=1)
    parser.add_argument("--state", type=Path, default=Path("/tmp/aicore-health-failures"))
    parser.add_argument("--timeout", type=float, default=5)
    args = parser.parse_args(argv)
    return check(args.url, args.state, args.restart_after, args.pid, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
