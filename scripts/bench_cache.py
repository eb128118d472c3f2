"""Cache hits against three floors, in one run, with `wrk` as the load generator.

Targets, each started alone, measured, stopped:
- floor: a plain uvicorn + FastAPI app answering POST /api/v1/generate with a constant
  (scripts/floor_app.py);
- no-op behind Ray Serve: the same app as a Serve deployment with the ingress's Serve options
  (scripts/noop_serve_app.py), behind Ray's Python proxy and behind INGRESS_MODE=haproxy;
- AI Core answering a repeated greedy request from the response cache (bootstrap key), in each mode.
Each: a warm-up, then wrk at 1 connection (p50/p99) and at --connections (req/s, p50).
Then --misses sequential generations (`"cache": false`, 8 tokens, httpx) for the hit/miss ratio.

    .venv/bin/python -m scripts.bench_cache [--seconds 8] [--connections 32] [--modes proxy,haproxy]
        [--misses 20] [--redis] [--models-file FILE] [--json OUT]

Only loopback traffic; every server it starts it stops. `--redis` runs AI Core with a private
redis-server (Debian's) instead of the in-process store.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

from scripts.noop_serve_app import IMPORT_PATH as NOOP
from scripts.serve_process import ROOT, ServeProcess, free_port
from scripts.wrk_load import WrkResult, lua_script, run_wrk

KEY = "bench-key-0123456789"
BODY = {"prompt": "Name the largest planet.", "max_tokens": 8, "temperature": 0}
PATH = "/api/v1/generate"


async def _measure(url: str, body: dict, requests: int, concurrency: int) -> tuple[float, float]:
    """httpx (scripts.bench_request_path, and the misses here): (p50 ms at this concurrency, req/s)."""
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(requests):
        queue.put_nowait(None)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=120, limits=limits) as client:
        async def worker():
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                r = await client.post(url, json=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return statistics.median(latencies) * 1000, requests / elapsed


def floor_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "scripts.floor_app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--no-access-log"], cwd=ROOT)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("floor app did not start")


def check(url: str, expect_hit: bool) -> None:
    """The answer wrk will count is a 200 (and a cache hit for AI Core), before wrk counts it."""
    for _ in range(2):  # the first fills the cache
        r = httpx.post(url, json=BODY, headers={"X-API-Key": KEY}, timeout=120)
        r.raise_for_status()
    if expect_hit and r.headers.get("x-cache") != "HIT":
        raise RuntimeError(f"expected a cache hit, got X-Cache {r.headers.get('x-cache')!r}")


def measure(url: str, args, expect_hit: bool = False) -> dict[str, WrkResult]:
    check(url, expect_hit)
    script = lua_script(BODY, {"X-API-Key": KEY})
    try:
        run_wrk(url, script, args.connections, 2)  # warm-up: connections, caches, lazy imports
        return {"c1": run_wrk(url, script, 1, args.seconds),
                "cN": run_wrk(url, script, args.connections, args.seconds)}
    finally:
        script.unlink()


def serve_target(label: str, server: ServeProcess, args, expect_hit: bool, results: dict) -> None:
    with server:
        results[label] = measure(server.base_url + PATH, args, expect_hit)
        if expect_hit and args.misses and "miss" not in results:
            p50, _ = asyncio.run(_measure(server.base_url + PATH, {**BODY, "cache": False}, args.misses, 1))
            results["miss"] = p50


def run(args) -> dict:
    results: dict = {}
    port = free_port()
    proc = floor_server(port)
    try:
        results["floor"] = measure(f"http://127.0.0.1:{port}{PATH}", args)
    finally:
        proc.terminate()
        proc.wait()
    env: dict = {"API_KEYS": KEY}
    redis = None
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis = RedisProcess().start()
        env["REDIS_URL"] = redis.url
    server_args = {"model_config_path": args.models_file} if args.models_file else {}
    try:
        for mode in args.modes.split(","):
            serve_target(f"noop-{mode}", ServeProcess(env={"INGRESS_MODE": mode}, import_path=NOOP), args,
                         False, results)
            serve_target(f"aicore-{mode}", ServeProcess(env={**env, "INGRESS_MODE": mode}, args=server_args),
                         args, True, results)
    finally:
        if redis:
            redis.stop()
    return results


def report(results: dict, args) -> None:
    n = args.connections
    store = "Redis" if args.redis else "in-process store"
    print(f"\nPOST {PATH}, wrk -t1, {args.seconds:g} s per row; AI Core: {store}\n")
    print(f"| target | c=1 p50 | c=1 p99 | c=1 req/s | c={n} req/s | c={n} p50 | errors |")
    print("|---|---|---|---|---|---|---|")
    for label, row in results.items():
        if label == "miss":
            continue
        one, many = row["c1"], row["cN"]
        print(f"| {label} | {one.p50_ms:.2f} ms | {one.p99_ms:.2f} ms | {one.rps:.0f} | {many.rps:.0f} | "
              f"{many.p50_ms:.1f} ms | {one.errors + many.errors} |")
    floor = results["floor"]["cN"].rps
    print()
    for mode in args.modes.split(","):
        hit, noop = results[f"aicore-{mode}"], results[f"noop-{mode}"]
        share = hit["c1"].p50_ms - noop["c1"].p50_ms
        print(f"- {mode}: AI Core's own share of a hit at c=1: {share:.2f} ms (p50 {hit['c1'].p50_ms:.2f} - "
              f"{noop['c1'].p50_ms:.2f}; target <= 3); c={n}: {hit['cN'].rps / noop['cN'].rps:.2f}x the no-op "
              f"(target >= 1), {hit['cN'].rps / floor:.3f}x the plain floor")
    if "miss" in results:
        hit = results[f"aicore-{args.modes.split(',')[0]}"]["c1"].p50_ms
        print(f"- miss (SmolLM2, 8 tokens, c=1, httpx): p50 {results['miss']:.1f} ms = {results['miss'] / hit:.0f}x a hit")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--modes", default="proxy,haproxy")
    parser.add_argument("--misses", type=int, default=20, help="sequential misses measured (0: none)")
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--models-file", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    results = run(args)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps({k: v if k == "miss" else {c: dataclasses.asdict(r) for c, r in v.items()}
                                         for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
