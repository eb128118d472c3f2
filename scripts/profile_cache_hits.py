"""Where a cache hit spends its CPU: py-spy on the ingress replica and the HTTP proxy under wrk.

Starts AI Core (`ServeProcess`, INGRESS_MODE from --mode), fills the cache with one greedy
request, then for --seconds drives the repeated request with wrk at --connections while py-spy
records the ingress replica and Ray's proxy (or HAProxy's manager; HAProxy itself is C).
Prints CPU ms per request of every process that used any (/proc ticks over the same window,
py-spy's own cost included), then per profiled process the functions with the most own-time
samples and, of AI Core's own code, the most inclusive samples.

    .venv/bin/python -m scripts.profile_cache_hits [--mode proxy] [--seconds 15] [--connections 32]
        [--rate 100] [--out DIR] [--redis] [--noop]

Only loopback traffic; the server it starts it stops.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

from scripts.bench_cache import BODY, KEY, PATH, check
from scripts.cpu_per_request import TICKS_PER_S, cpu_ticks
from scripts.noop_serve_app import IMPORT_PATH as NOOP
from scripts.profile_request_path import processes, pyspy, top_frames
from scripts.serve_process import ServeProcess
from scripts.wrk_load import lua_script, run_wrk

PROFILED = {"ingress replica": "ServeReplica:ai-core:ingress", "HTTP proxy": "ProxyActor"}
OURS = ("serve_app/", "core/", "deployments/")


def inclusive_ours(path: Path, count: int) -> list[tuple[str, int]]:
    """Samples that pass through each of our functions (once per stack), as % of all samples."""
    seen: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else ():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        total += int(samples)
        for frame in {f for f in stack.split(";") if any(mark in f for mark in OURS)}:
            seen[frame] += int(samples)
    return [(frame, n * 100 // max(total, 1)) for frame, n in seen.most_common(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="proxy")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--noop", action="store_true", help="the no-op behind Serve instead (what Serve costs)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aicore-hits-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {"API_KEYS": KEY, "INGRESS_MODE": args.mode}
    redis = None
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis = RedisProcess().start()
        env["REDIS_URL"] = redis.url
    script = lua_script(BODY, {"X-API-Key": KEY})
    try:
        with ServeProcess(env=env, import_path=NOOP if args.noop else None) as server:
            url = server.base_url + PATH
            check(url, expect_hit=not args.noop)
            run_wrk(url, script, args.connections, 3)  # warm-up
            found = processes(server.proc.pid)
            spied = {pid: role for pid, cmd in found.items() for role, mark in PROFILED.items() if mark in cmd}
            spies = pyspy(spied, args.seconds, args.rate, out)
            before = cpu_ticks()
            result = run_wrk(url, script, args.connections, args.seconds)
            after = cpu_ticks()
            for proc in spies["procs"]:
                proc.wait()
    finally:
        script.unlink()
        if redis:
            redis.stop()
    print(f"\n{args.mode} mode, wrk -c{args.connections} {args.seconds} s: {result.requests} requests, "
          f"{result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, {result.errors} errors\n")
    print("| process | CPU ms per request |\n|---|---|")
    rows = [((after[p][1] - before[p][1]) / TICKS_PER_S, after[p][0]) for p in after if p in before]
    for seconds, command in sorted(rows, reverse=True)[:10]:
        if seconds > 0:
            print(f"| {command[:70]} | {1000 * seconds / max(result.requests, 1):.3f} |")
    for pid, role in spied.items():
        path = spies["files"][pid]
        print(f"\n## {role} (pid {pid}): own time, % of samples")
        for frame, share in top_frames(path, args.top):
            print(f"    {share:>4} {frame[:150]}")
        print("  AI Core's functions, inclusive:")
        for frame, share in inclusive_ours(path, args.top):
            print(f"    {share:>4} {frame[:150]}")
    print(f"\nraw py-spy stacks: {out}")


if __name__ == "__main__":
    main()
