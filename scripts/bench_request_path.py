"""The request path's cost in one run: decode, TTFT, cache-hit req/s, idle memory, both ingress modes.

In one run, on the same machine, for INGRESS_MODE=proxy and INGRESS_MODE=haproxy, the server started
as README command one starts it (`python -m scripts.run_server`, shipped models.json unless
--models-file):
- single-stream decode tok/s and TTFT through the stack (`/v1/completions`, streamed, greedy,
  end-of-sequence ignored) against llama-cpp-python in this process with Ray stopped (as many
  threads as cores; measured before and after the servers, medians over both);
- cache-hit requests/s at concurrency 1 and 32 (`/api/v1/generate`, a repeated greedy request)
  against a plain uvicorn + FastAPI app answering the same JSON (the floor), one httpx load generator;
- idle footprint: PSS (/proc/<pid>/smaps_rollup) over the server's processes, by role, after it idled.

    .venv/bin/python -m scripts.bench_request_path [--tokens 128] [--runs 3] [--requests 2000] [--redis]

Only loopback traffic; every server it starts it stops. The printed ratios are those docs/benchmarks.md
reports against its targets.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Optional

from scripts.bench_cache import BODY, _measure, floor_server
from scripts.bench_decode import KEY, MODEL, PROMPT, direct_run, load_direct, stack_run
from scripts.serve_process import ServeProcess, free_port

ROLES = (  # first match wins; matched against the process's command line
    ("model replicas", ("ServeReplica:ai-core:model-",)),
    ("ingress replicas", ("ServeReplica:ai-core:ingress",)),
    ("helper actor (metrics hub and shared state)", ("ServeReplica:ai-core:hub",)),
    ("HTTP proxy (Ray's proxy or HAProxy + its manager)", ("ProxyActor", "HAProxyManager", "haproxy")),
    ("Serve controller", ("ServeController",)),
    ("Ray core (GCS, raylet, dashboard, agents, driver, idle workers)", ("",)),
)


def pss_by_role(root_pid: int) -> dict[str, tuple[int, int]]:
    """{role: (processes, PSS bytes)} over `root_pid` and all its descendants."""
    import psutil

    root = psutil.Process(root_pid)
    totals: dict[str, list[int]] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            cmdline = " ".join(process.cmdline()) or process.name()
            rollup = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
        except (psutil.NoSuchProcess, OSError):
            continue
        pss = next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
        role = next(name for name, marks in ROLES if any(mark in cmdline for mark in marks))
        entry = totals.setdefault(role, [0, 0])
        entry[0] += 1
        entry[1] += pss
    return {role: (count, pss) for role, (count, pss) in totals.items()}


def cache_hits(url: str, requests: int) -> dict:
    asyncio.run(_measure(url, BODY, 20, 1))  # warm-up, and the first answer fills the cache
    p50_1, rps_1 = asyncio.run(_measure(url, BODY, max(100, requests // 4), 1))
    p50_32, rps_32 = asyncio.run(_measure(url, BODY, requests, 32))
    return {"p50_1": p50_1, "rps_1": rps_1, "p50_32": p50_32, "rps_32": rps_32}


def run_mode(mode: str, args, redis_url: Optional[str], llm) -> dict:
    env = {"API_KEYS": KEY, "INGRESS_MODE": mode, **({"REDIS_URL": redis_url} if redis_url else {})}
    server_args = {"model_config_path": args.models_file} if args.models_file else {}
    # Every model settled: a replica still loading (MiniLM imports torch for ~20 s on 2 cores) would
    # take CPU from the runs below, and an idle server's cost is what they measure.
    server = ServeProcess(env=env, args=server_args, via_run_server=True).start()
    try:
        stack_run(server.base_url, 8, PROMPT + " (warm-up)")
        time.sleep(args.idle_s)  # settle: loads done, nothing in flight
        footprint = pss_by_role(server.proc.pid)
        beside = {}  # what the idle server alone costs the in-process loop, per llama thread count
        for threads in sorted({int(t) for t in args.beside_threads.split(",")}):
            other = load_direct(threads)
            direct_run(other, 8)
            beside[threads] = [direct_run(other, args.tokens) for _ in range(args.runs)]
            del other
        # A distinct prompt per run: a repeated greedy request would be answered from the cache.
        decode = [stack_run(server.base_url, args.tokens, f"{PROMPT} (run {i})") for i in range(args.runs)]
        hits = cache_hits(server.base_url + "/api/v1/generate", args.requests)
    finally:
        server.stop()
    return {"decode": decode, "beside": beside, "hits": hits, "footprint": footprint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="cache hits at concurrency 32")
    parser.add_argument("--idle-s", type=float, default=15, help="idle time before the footprint is read")
    parser.add_argument("--models-file", help="a models.json other than the shipped one")
    parser.add_argument("--modes", default="proxy,haproxy")
    parser.add_argument("--redis", action="store_true", help="REDIS_URL: a private redis-server")
    parser.add_argument("--beside-threads", default=f"1,2,{os.cpu_count() or 1}",
                        help="llama thread counts tried in this process beside the idle server")
    args = parser.parse_args()
    threads = os.cpu_count() or 1

    llm = load_direct(threads)
    direct_run(llm, 8)  # warm-up

    runs = itertools.count()

    def direct() -> list[tuple[float, float]]:
        # Distinct prompts with a shared start, as the stack's runs get: both reuse the cached
        # prefix (llama-cpp-python's Llama, the engine's slot), so the TTFTs compare like for like.
        return [direct_run(llm, args.tokens, f"{PROMPT} (run {next(runs)})") for _ in range(args.runs)]

    port = free_port()
    floor_proc = floor_server(port)
    try:
        floor = cache_hits(f"http://127.0.0.1:{port}/api/v1/generate", args.requests)
    finally:
        floor_proc.terminate()
        floor_proc.wait()
    baseline = direct()

    redis = None
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis = RedisProcess().start()
    try:
        results = {mode: run_mode(mode, args, redis.url if redis else None, llm) for mode in args.modes.split(",")}
    finally:
        if redis:
            redis.stop()
    baseline += direct()
    report(args, threads, baseline, floor, results)


def report(args, threads: int, baseline: list, floor: dict, results: dict) -> None:
    b_tps = statistics.median(t for _, t in baseline)
    b_ttft = statistics.median(f for f, _ in baseline) * 1000
    print(f"\n{MODEL}, {args.tokens} tokens, greedy; direct = llama-cpp-python in this process, Ray stopped, "
          f"{threads} threads (median of {len(baseline)} runs: {b_tps:.1f} tok/s, TTFT {b_ttft:.0f} ms)\n")
    print("| ingress mode | decode tok/s | x direct | TTFT ms | - direct ms | hit req/s c=1 (p50 ms) | x floor | "
          "hit req/s c=32 (p50 ms) | x floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| floor (plain FastAPI) | | | | | {floor['rps_1']:.0f} ({floor['p50_1']:.2f}) | 1 | "
          f"{floor['rps_32']:.0f} ({floor['p50_32']:.1f}) | 1 |")
    for mode, result in results.items():
        tps = statistics.median(t for _, t in result["decode"])
        ttft = statistics.median(f for f, _ in result["decode"]) * 1000
        hits = result["hits"]
        print(f"| {mode} | {tps:.1f} | {tps / b_tps:.2f} | {ttft:.0f} | {ttft - b_ttft:+.0f} | "
              f"{hits['rps_1']:.0f} ({hits['p50_1']:.2f}) | {hits['rps_1'] / floor['rps_1']:.3f} | "
              f"{hits['rps_32']:.0f} ({hits['p50_32']:.1f}) | {hits['rps_32'] / floor['rps_32']:.3f} |")
    for mode, result in results.items():
        print(f"\n{mode} mode, the same loop in this process beside the idle server:")
        for threads, runs in result["beside"].items():
            beside = statistics.median(t for _, t in runs)
            print(f"- {threads} thread(s): {beside:.1f} tok/s ({beside / b_tps:.2f}x direct)")
    for mode, result in results.items():
        print(f"\nIdle footprint, {mode} mode (PSS after {args.idle_s:g} s idle):\n")
        print("| role | processes | PSS MB |")
        print("|---|---|---|")
        footprint = result["footprint"]
        for role, (count, pss) in footprint.items():
            print(f"| {role} | {count} | {pss / 2**20:.0f} |")
        total = sum(pss for _, pss in footprint.values())
        not_models = sum(pss for role, (_, pss) in footprint.items() if role != "model replicas")
        print(f"| total | {sum(c for c, _ in footprint.values())} | {total / 2**20:.0f} |")
        print(f"\nRay + ingress + helpers (everything but the model replicas): {not_models / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
