"""Does Redis give its memory back after a flood of web tokens? (docs/security.md)

Starts its own Redis (Debian's redis-server, loopback, no persistence) and an AI Core server on
it (SmolLM2 only, WEB_TOKEN_KEEP_S short), reads Redis's `used_memory` (INFO memory), mints N web
tokens that expire soon and uses each once (a `/v1/models` call: a request that records usage),
reads the memory at its peak, then waits until every entry of those tokens has expired and
reads it again. Stops by itself; traffic goes to 127.0.0.1 only.

    .venv/bin/python -m scripts.bench_store_bounds --tokens 10000
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10000)
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
        def memory() -> dict:
            """Redis's whole memory, the dataset's share (keys and values: what the flood left behind),
            and what its client connections hold (the server's connection pool grows under load)."""
            info = client.info("memory")
            return {"used_memory": int(info["used_memory"]), "dataset": int(info["used_memory_dataset"]),
                    "clients": int(info["mem_clients_normal"]), "connections": int(client.info("clients")["connected_clients"])}
        baseline, keys_before = memory(), client.dbsize()
        started = time.monotonic()
        failures = _flood_sync(server.base_url, args)
        flood_s = time.monotonic() - started
        peak, keys_peak = memory(), client.dbsize()
        deadline = time.monotonic() + args.expires_in + args.keep + 300
        while time.monotonic() < deadline and client.zcard("aicore:webtokens") + len(client.keys("aicore:usage:*")) > 0:
            time.sleep(2)
        time.sleep(2)
        after, keys_after = memory(), client.dbsize()
        print(json.dumps({
            "tokens": args.tokens, "failures": failures, "flood_s": round(flood_s, 1),
            "memory_bytes": {"baseline": baseline, "peak": peak, "after_expiry": after},
            "used_memory_after_vs_baseline": round(after["used_memory"] / baseline["used_memory"], 3),
            "dataset_after_vs_baseline": round(after["dataset"] / baseline["dataset"], 3),
            "keys": {"baseline": keys_before, "peak": keys_peak, "after_expiry": keys_after},
            "left_after_expiry": sorted(client.keys("*"))[:10],
        }, indent=2))
    finally:
        server.stop()
        store.stop()


def _flood_sync(url: str, args: argparse.Namespace) -> int:
    return asyncio.run(_flood(url, args.tokens, args.expires_in, args.concurrency))


if __name__ == "__main__":
    main()
