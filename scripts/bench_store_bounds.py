"""Does Redis give its memory back after a flood of web tokens? (docs/security.md)

Starts its own Redis (Debian's redis-server, loopback, no persistence) and an AI Core server on
it (SmolLM2 only, WEB_TOKEN_KEEP_S short). A web token is minted and used once (a `/v1/models`
call: a request that records usage) N times, at a fixed concurrency.

The baseline is read after a warm-up flood of a few tokens at the same concurrency has expired:
the server's connection pool to Redis is then as wide as the flood's, its Lua scripts are loaded,
and every command the flood sends has run once (Redis 7 keeps a latency histogram per command
from its first call), so what the baseline lacks is only what the flood itself left. After each
flood the script waits until every key that expires has expired, then until Redis's memory
stops changing (its cron shrinks the emptied key tables a step at a time), and reads it again
in parts: dataset, key tables, scripts, client connections, slow log, latency histograms, and
what the allocator (jemalloc) holds. `--floods 2` tells whether a second flood grows it further.
Stops by itself; traffic goes to 127.0.0.1 only.

    .venv/bin/python -m scripts.bench_store_bounds --tokens 10000 --floods 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import redis

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.redis_process import RedisProcess

ADMIN_KEY = "bench-store-bounds-admin-key"
MODEL = "smollm2-135m-instruct"
STEADY_READS = 5  # equal `used_memory` reads, a second apart, that count as settled


def _models_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    path = Path(tempfile.mkdtemp(prefix="aicore-bench-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


async def _flood(url: str, n: int, expires_in_s: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal failures
        async with gate:
            made = await client.post("/api/v1/keys/web-tokens", headers={"X-API-Key": ADMIN_KEY},
                                     json={"models": [MODEL], "expires_in_s": expires_in_s})
            if made.status_code != 201:
                failures += 1
                return
            used = await client.get("/v1/models", headers={"Authorization": f"Bearer {made.json()['key']}"})
            failures += used.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))
    return failures


def memory(client: redis.Redis) -> dict:
    """Redis's `used_memory` and its parts (INFO memory, MEMORY STATS), in bytes."""
    info, stats = client.info("memory"), client.memory_stats()
    tables = stats.get("db.0", {})
    return {
        "used_memory": info["used_memory"],
        "dataset": info["used_memory_dataset"],  # used_memory less every overhead below
        "key_tables": tables.get("overhead.hashtable.main", 0) + tables.get("overhead.hashtable.expires", 0),
        "scripts": info["used_memory_scripts"],
        "clients": info["mem_clients_normal"],
        "startup": info["used_memory_startup"],
        # What jemalloc has handed out and what it keeps from the OS (freed pages it may reuse).
        "allocator_allocated": info.get("allocator_allocated", 0),
        "allocator_resident": info.get("allocator_resident", 0),
        "rss": info["used_memory_rss"],
        "keys": client.dbsize(),
        "connections": client.info("clients")["connected_clients"],
        "slowlog_entries": client.slowlog_len(),  # kept (at most 128) with their arguments: dataset bytes
        # Redis 7 keeps a latency histogram (~23 KB, counted as dataset) per command name from its
        # first call on: bounded by the commands used, not by the traffic.
        "latency_histograms": len(_commands(client)),
    }


def _commands(client: redis.Redis) -> set[str]:
    """The commands Redis keeps a latency histogram of (every one called since it started)."""
    prefix = "latency_percentiles_usec_"
    return {name[len(prefix):] for name in client.info("latencystats") if name.startswith(prefix)}


def _only_lasting_keys(client: redis.Redis) -> bool:
    """Every key that expires has expired (what stays: the admin key's usage counters)."""
    return client.dbsize() <= 100 and all(client.ttl(key) == -1 for key in client.scan_iter(count=1000))


def settle(client: redis.Redis, limit_s: float) -> tuple[float, bool]:
    """Wait until every expiring key is gone, then until `used_memory` holds still: (seconds waited,
    whether it did settle before `limit_s`)."""
    started = time.monotonic()
    while not _only_lasting_keys(client) and time.monotonic() - started < limit_s:
        time.sleep(1)
    readings: list[int] = []
    while time.monotonic() - started < limit_s:
        readings = (readings + [client.info("memory")["used_memory"]])[-STEADY_READS:]
        if len(readings) == STEADY_READS and len(set(readings)) == 1:
            return round(time.monotonic() - started, 1), True
        time.sleep(1)
    return round(time.monotonic() - started, 1), False


def _flood_and_settle(server: ServeProcess, client: redis.Redis, n: int, args: argparse.Namespace) -> dict:
    commands_before = _commands(client)
    started = time.monotonic()
    failures = asyncio.run(_flood(server.base_url, n, args.expires_in, args.concurrency))
    flood_s = round(time.monotonic() - started, 1)
    peak = memory(client)
    waited_s, settled = settle(client, args.expires_in + args.keep + 300)
    left = sorted(client.keys("*"))[:10]  # before the reading: KEYS's own histogram is in every baseline
    return {"tokens": n, "failures": failures, "flood_s": flood_s, "settled": settled, "settled_after_s": waited_s,
            "peak": peak, "left": left, "commands_first_called": sorted(_commands(client) - commands_before),
            "after_expiry": memory(client)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10000)
    parser.add_argument("--floods", type=int, default=1, help="floods in a row, each left to expire")
    parser.add_argument("--warmup", type=int, default=64, help="tokens of the warm-up flood before the baseline")
    parser.add_argument("--expires-in", type=int, default=60, help="each token's lifetime (s)")
    parser.add_argument("--keep", type=int, default=5, help="WEB_TOKEN_KEEP_S of the server (s)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    store = RedisProcess().start()
    client = redis.Redis.from_url(store.url, decode_responses=True)
    server = ServeProcess(env={"API_KEYS": ADMIN_KEY, "REDIS_URL": store.url, "WEB_TOKEN_KEEP_S": str(args.keep),
                               "LOG_LEVEL": "WARNING"}, args={"model_config_path": str(_models_file())})
    try:
        server.start(ready_models=(MODEL,))
        cold = memory(client)
        warmup = _flood_and_settle(server, client, args.warmup, args)
        baseline = warmup["after_expiry"]
        floods = [_flood_and_settle(server, client, args.tokens, args) for _ in range(args.floods)]
        print(json.dumps({
            "cold": cold, "baseline_after_warmup": baseline,
            "warmup": {k: warmup[k] for k in ("tokens", "failures", "settled", "commands_first_called")},
            "floods": floods,
            "used_memory_after_vs_baseline": [round(f["after_expiry"]["used_memory"] / baseline["used_memory"], 3)
                                              for f in floods],
        }, indent=2))
    finally:
        server.stop()
        store.stop()


if __name__ == "__main__":
    main()
