"""Redis commands per request on a real server: a private redis-server, a real `serve run` (one
ingress replica, SmolLM2), N chat completions of a managed key over HTTP, and Redis's own count of
every command it ran (INFO commandstats, which counts the commands inside Lua scripts too).

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_redis_commands -n 100

Runs a key with RPM/TPM only, then (where the code has quotas) one with every quota. The counts
include what the server does on its own meanwhile (measured apart first, for as long, and shown
as `idle_commands`); the last USAGE_FLUSH_S write is waited for. Run from another checkout (its
PYTHONPATH) to measure that revision: this file only talks HTTP and Redis.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis

from scripts.serve_process import ROOT, ServeProcess, free_port

MODEL = "smollm2-135m-instruct"
BOOT = "bench-redis-commands-bootstrap-key"
QUOTAS = {"daily_token_quota": 10 ** 9, "monthly_token_quota": 10 ** 9, "daily_request_quota": 10 ** 6,
          "monthly_request_quota": 10 ** 6}


def _stats(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {name: n for name, n in delta.items() if n and name not in ("info", "ping")}


def _one_model_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    path = Path(tempfile.mkdtemp(prefix="aicore-bench-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


def measure(url: str, client: redis.Redis, fields: dict, requests: int, settle_s: float) -> dict:
    admin = httpx.Client(base_url=url, headers={"X-API-Key": BOOT}, timeout=300)
    made = admin.post("/api/v1/keys", json={"name": "bench", "scopes": ["inference"], **fields})
    made.raise_for_status()
    headers = {"X-API-Key": made.json()["key"], "Cache-Control": "no-cache"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as c:
        c.post("/v1/chat/completions", json=body).raise_for_status()  # the key's first request: indexes made
        time.sleep(settle_s)
        started, before = time.monotonic(), _stats(client)
        for _ in range(requests):
            c.post("/v1/chat/completions", json=body).raise_for_status()
        time.sleep(settle_s)  # the last usage flush
        delta, elapsed = _delta(before, _stats(client)), time.monotonic() - started
    return {"key": sorted(fields), "requests": requests, "seconds": round(elapsed, 1),
            "per_request": {n: round(calls / requests, 2) for n, calls in sorted(delta.items())},
            "all_commands_per_request": round(sum(delta.values()) / requests, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=100)
    parser.add_argument("--settle-s", type=float, default=2.5, help="wait after the requests (> USAGE_FLUSH_S)")
    args = parser.parse_args()
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port),
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    server = ServeProcess(env={"API_KEYS": BOOT, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "LOG_FORMAT": "text"},
                          args={"model_config_path": str(_one_model_file())})
    try:
        server.start(ready_models=(MODEL,))
        time.sleep(args.settle_s)
        idle_before = _stats(client)
        time.sleep(10)
        idle = sum(_delta(idle_before, _stats(client)).values())
        print(json.dumps({"idle_commands_per_s": round(idle / 10, 2)}))
        limits = {"rate_limit_per_minute": 100000, "tokens_per_minute": 10 ** 9}
        print(json.dumps(measure(server.base_url, client, limits, args.requests, args.settle_s)))
        print(json.dumps(measure(server.base_url, client, {**limits, **QUOTAS}, args.requests, args.settle_s)))
    finally:
        server.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)


if __name__ == "__main__":
    main()
