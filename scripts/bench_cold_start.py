"""Cold start (zero replicas to first token) against warm first token, SmolLM2, one run; then
the node's memory in use with the model loaded and after an explicit unload.

The model is configured with min_replicas 0 and a short idle timeout, so each cold sample
starts from a scaled-to-zero deployment; warm samples follow a loaded replica.

    .venv/bin/python -m scripts.bench_cold_start [--cold 3] [--warm 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from scripts.serve_process import ROOT, ServeProcess

MODEL = "smollm2-135m-instruct"
KEY = "bench-key-0123456789"
IDLE_S = 3


def first_token_s(base_url: str) -> float:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", base_url + "/v1/completions", json=body, headers={"X-API-Key": KEY}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - started
    raise RuntimeError("no token")


def replicas(base_url: str) -> int:
    models = httpx.get(base_url + "/api/v1/models", headers={"X-API-Key": KEY}, timeout=60).json()["models"]
    return next(m["replicas"] for m in models if m["name"] == MODEL)


def wait_unloaded(base_url: str) -> None:
    for _ in range(600):
        if replicas(base_url) == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the model did not scale to zero")


def node_used_bytes() -> int:
    """MemTotal - MemAvailable: memory the node's processes hold (page cache excluded)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = lambda name: int(fields[name].split()[0]) * 1024  # noqa: E731
    return kib("MemTotal") - kib("MemAvailable")


def settled_used_bytes(samples: int = 5) -> float:
    reads = []
    for _ in range(samples):
        time.sleep(0.4)
        reads.append(node_used_bytes())
    return statistics.median(reads)


def memory_freed_by_unload(base_url: str) -> tuple[int, int, int]:
    """(replica RSS, node memory in use loaded, the same after unload), each a median of 5 reads."""
    headers = {"X-API-Key": KEY}
    httpx.post(base_url + "/api/v1/models/load", json={"model": MODEL}, headers=headers, timeout=600).raise_for_status()
    first_token_s(base_url)
    models = httpx.get(base_url + "/api/v1/models", headers=headers, timeout=60).json()["models"]
    rss = next(m["resident_memory_bytes"] for m in models if m["name"] == MODEL)
    loaded = settled_used_bytes()
    httpx.post(base_url + "/api/v1/models/unload", json={"model": MODEL}, headers=headers, timeout=600).raise_for_status()
    unloaded = settled_used_bytes()
    return rss, int(loaded), int(unloaded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    entry = json.loads((ROOT / "models.json").read_text())["models"][MODEL]
    entry["autoscaling"] = {"min_replicas": 0, "max_replicas": 1}
    entry["idle_timeout_s"] = IDLE_S
    path = Path(tempfile.mkstemp(prefix="aicore-cold-", suffix=".json")[1])
    path.write_text(json.dumps({"models": {MODEL: entry}}))

    cold, warm = [], []
    with ServeProcess(env={"API_KEYS": KEY}, args={"model_config_path": str(path)}) as server:
        for _ in range(args.cold):
            wait_unloaded(server.base_url)
            cold.append(first_token_s(server.base_url))
            warm += [first_token_s(server.base_url) for _ in range(args.warm)]
        rss, loaded, unloaded = memory_freed_by_unload(server.base_url)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"\n{MODEL}: first token through the whole stack, median of {len(cold)} cold / {len(warm)} warm\n")
    print("| start | time to first token |")
    print("|---|---|")
    print(f"| cold: zero replicas -> replica started, weights loaded, first token | {c:.2f} s |")
    print(f"| warm: replica loaded | {w * 1000:.0f} ms |")
    print(f"\ncold / warm: {c / w:.0f}x")
    mib = 2**20
    print(f"\nnode memory in use (MemTotal - MemAvailable), median of 5 reads: loaded {loaded / mib:.0f} MiB, "
          f"after POST /api/v1/models/unload {unloaded / mib:.0f} MiB: {(loaded - unloaded) / mib:.0f} MiB freed "
          f"(the replica's resident memory was {rss / mib:.0f} MiB; its mmapped GGUF pages stay in the page cache)")


if __name__ == "__main__":
    main()
