"""CPU by process: idle, and per streamed request (what Ray and the request path cost).

Starts the server as README command one does (`python -m scripts.run_server`, shipped models.json,
response cache off), waits --settle-s, then reads every process's CPU time (/proc/<pid>/stat):
- idle: over --idle-s with nothing requested, as % of one core;
- per request: --requests sequential streamed greedy `/v1/completions` of --tokens tokens
  (`scripts.bench_decode.stack_run`: distinct prompts, end-of-sequence ignored), as CPU ms per request.
Sequential requests show what one request costs each process with nothing else running;
`--tokens 2` isolates the fixed cost of a request from the per-chunk cost.

    .venv/bin/python -m scripts.cpu_per_request [--idle-s 30] [--requests 30] [--tokens 64]

Only loopback traffic; the server it starts it stops.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from scripts.bench_decode import KEY, PROMPT, stack_run
from scripts.machine_load import process_ticks
from scripts.serve_process import ServeProcess

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command line, user + system ticks) of every process now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_text().replace("\0", " ").strip()
                found[int(entry.name)] = (command[:80], process_ticks((entry / "stat").read_text())[1])
            except (OSError, ValueError, IndexError):
                continue
    return found


def spent(before: dict, after: dict) -> list[tuple[float, str]]:
    """(seconds of CPU, command) per process alive at both reads, most first."""
    rows = [((after[p][1] - before[p][1]) / TICKS_PER_S, after[p][0]) for p in after if p in before]
    return sorted((row for row in rows if row[0] > 0), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=10)
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    with ServeProcess(env={"API_KEYS": KEY, "CACHE_ENABLED": "false"}, via_run_server=True) as server:
        for i in range(3):
            stack_run(server.base_url, 8, f"{PROMPT} (warm-up {i})")
        time.sleep(args.settle_s)
        before, started = cpu_ticks(), time.monotonic()
        time.sleep(args.idle_s)
        idle, idle_s = spent(before, cpu_ticks()), time.monotonic() - started
        before, started = cpu_ticks(), time.monotonic()
        for i in range(args.requests):
            stack_run(server.base_url, args.tokens, f"{PROMPT} (run {i})")
        busy, busy_s = spent(before, cpu_ticks()), time.monotonic() - started
    print(f"\nIdle {idle_s:.0f} s: {100 * sum(s for s, _ in idle) / idle_s:.1f}% of one core in all")
    for seconds, command in idle[:args.top]:
        print(f"{100 * seconds / idle_s:6.2f}%  {command}")
    per = 1000 / args.requests
    print(f"\n{args.requests} sequential streamed requests of {args.tokens} tokens in {busy_s:.1f} s: "
          f"CPU ms per request, {per * sum(s for s, _ in busy):.0f} in all")
    for seconds, command in busy[:args.top]:
        print(f"{per * seconds:8.1f}  {command}")


if __name__ == "__main__":
    main()
