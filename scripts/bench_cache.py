"""Cache-hit latency and throughput against a miss and against a plain FastAPI app (the floor).

Three targets, one load generator, one run:
- floor: a plain uvicorn + FastAPI app answering POST /api/v1/generate with a constant;
- hit: AI Core answering a repeated greedy request from the response cache;
- miss: AI Core generating 8 tokens with SmolLM2 for every request (`"cache": false`).

    .venv/bin/python -m scripts.bench_cache [--requests 200] [--concurrency 16] [--redis]

`--redis` runs AI Core with a private redis-server (needs Debian's redis-server) instead of the
in-process store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from scripts.serve_process import ServeProcess, free_port

KEY = "bench-key-0123456789"
BODY = {"prompt": "Name the largest planet.", "max_tokens": 8, "temperature": 0}

FLOOR_APP = textwrap.dedent('''
    from fastapi import FastAPI
    app = FastAPI()

    @app.post("/api/v1/generate")
    async def generate(body: dict):
        return {"response": "Jupiter.", "model": "constant", "tokens_used": 12,
                "processing_time": 0.0, "timestamp": "2026-01-01T00:00:00Z", "cached": True}
''')


async def _measure(url: str, body: dict, requests: int, concurrency: int) -> tuple[float, float]:
    """Returns (p50 latency in ms at this concurrency, requests per second)."""
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


def measure(url: str, body: dict, requests: int, concurrency: int) -> dict:
    asyncio.run(_measure(url, body, 10, 1))  # warm-up (and fills the cache for the hit case)
    p50_1, _ = asyncio.run(_measure(url, body, max(20, requests // 4), 1))
    _, rps = asyncio.run(_measure(url, body, requests, concurrency))
    return {"p50_ms": p50_1, "rps": rps}


def floor_server(port: int) -> subprocess.Popen:
    path = Path(tempfile.mkdtemp()) / "floor_app.py"
    path.write_text(FLOOR_APP)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port),
                             "--log-level", "warning", "--no-access-log"], cwd=path.parent)
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/api/v1/generate", json={}, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("floor app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()

    port = free_port()
    proc = floor_server(port)
    try:
        floor = measure(f"http://127.0.0.1:{port}/api/v1/generate", BODY, args.requests, args.concurrency)
    finally:
        proc.terminate()

    env = {"API_KEYS": KEY}
    redis_proc = None
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis_proc = RedisProcess().start()
        env["REDIS_URL"] = redis_proc.url
    try:
        with ServeProcess(env=env) as server:
            url = server.base_url + "/api/v1/generate"
            hit = measure(url, BODY, args.requests, args.concurrency)
            miss = measure(url, {**BODY, "cache": False}, max(40, args.requests // 5), args.concurrency)
    finally:
        if redis_proc:
            redis_proc.stop()

    store = "Redis" if args.redis else "in-process store"
    print(f"\nPOST /api/v1/generate, {store}; p50 at concurrency 1, throughput at concurrency {args.concurrency}\n")
    print("| target | p50 latency | requests/s |")
    print("|---|---|---|")
    for label, row in (("plain FastAPI constant (floor)", floor), ("AI Core cache hit", hit),
                       ("AI Core miss (SmolLM2, 8 tokens)", miss)):
        print(f"| {label} | {row['p50_ms']:.1f} ms | {row['rps']:.0f} |")
    print(f"\nhit vs miss: {miss['p50_ms'] / hit['p50_ms']:.1f}x faster, {hit['rps'] / miss['rps']:.1f}x the throughput")
    print(f"hit vs floor: {hit['p50_ms'] / floor['p50_ms']:.1f}x the latency, "
          f"{hit['rps'] / floor['rps']:.2f} of the throughput")


if __name__ == "__main__":
    main()
