"""Cold start (zero replicas to first token) against warm first token, SmolLM2, one run.

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
KEY = "bench-key"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    entry = json.loads((ROOT / "models.json").read_text())["models"][MODEL]
    entry["autoscaling"] = {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": IDLE_S}
    path = Path(tempfile.mkstemp(prefix="aicore-cold-", suffix=".json")[1])
    path.write_text(json.dumps({"models": {MODEL: entry}}))

    cold, warm = [], []
    with ServeProcess(env={"API_KEYS": KEY}, args={"model_config_path": str(path)}) as server:
        for _ in range(args.cold):
            wait_unloaded(server.base_url)
            cold.append(first_token_s(server.base_url))
            warm += [first_token_s(server.base_url) for _ in range(args.warm)]
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"\n{MODEL}: first token through the whole stack, median of {len(cold)} cold / {len(warm)} warm\n")
    print("| start | time to first token |")
    print("|---|---|")
    print(f"| cold: zero replicas -> replica started, weights loaded, first token | {c:.2f} s |")
    print(f"| warm: replica loaded | {w * 1000:.0f} ms |")
    print(f"\ncold / warm: {c / w:.0f}x")


if __name__ == "__main__":
    main()
