"""Drive one URL with `wrk` (Debian's `wrk`, a C load generator) and read back its figures.

A Python client is itself the bottleneck against a plain FastAPI app (~0.5x its capacity), so the
cache benchmarks use wrk: POST body and headers come from a Lua script written to a temp file,
whose `done` hook prints one JSON line (requests, duration, latency percentiles, errors).
Every run has a fixed duration: it stops by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MARK = "WRK_RESULT "
# Lua long brackets with a level no JSON body contains: the body needs no escaping.
_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{mark}{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors (timeouts included)


def lua_script(body: dict, headers: Optional[dict] = None) -> Path:
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items())
    text = _SCRIPT.format(body=json.dumps(body), headers=lines, mark=MARK)
    fd, name = tempfile.mkstemp(prefix="aicore-wrk-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def run_wrk(url: str, script: Path, connections: int, seconds: float, timeout_s: float = 10) -> WrkResult:
    """One thread (the servers measured have one Python process on the path: one wrk thread keeps up)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    out = subprocess.run(
        [binary, "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=True,
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    data = json.loads(line[len(MARK):])
    return WrkResult(
        connections=connections, requests=data["requests"], rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=data["non_2xx"] + data["socket_errors"],
    )
