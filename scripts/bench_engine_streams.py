"""The GGUF engine alone at N concurrent streams: the ceiling the whole stack is measured against.

The packaged SmolLM2 of models.json with its threads and context, 16 slots, loaded in this process
(no Ray, no HTTP): the workload of one `scripts.bench_concurrency` level (distinct prompts, `--tokens`
tokens each, end-of-sequence ignored, temperature 0, `--streams` at a time, `--requests` in all),
run `--runs` times after a warm-up. Prints aggregate tok/s per run. Beside a bench_concurrency run
of the same level, the difference is what Ray, HTTP and the ingress cost. Run it under the CPU lock:

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_engine_streams [--streams 16]
        [--requests 32] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from core.types import GenerationRequest, SamplingParams
from deployments.backends.gguf import GGUFBackend
from deployments.config import load_models_file
from deployments.weights import resolve_weights
from scripts.bench_concurrency import MODEL
from scripts.serve_process import ROOT
from scripts.stream_load import TOPICS


async def _stream(backend: GGUFBackend, n: int, tokens: int) -> None:
    request = GenerationRequest(request_id=f"r{n}", prompt=f"{n}. Write a story about {TOPICS[n % len(TOPICS)]}.",
                                sampling=SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True))
    async for _ in backend.stream(request):
        pass


async def _run(backend: GGUFBackend, streams: int, requests: int, tokens: int, first: int) -> float:
    gate = asyncio.Semaphore(streams)

    async def one(n: int) -> None:
        async with gate:
            await _stream(backend, n, tokens)

    started = time.perf_counter()
    await asyncio.gather(*(one(first + n) for n in range(requests)))
    return requests * tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = load_models_file(ROOT / "models.json").models[MODEL]  # as the server runs it (16 slots by default)
    backend = GGUFBackend(MODEL, config, resolve_weights(config.path, Path(tempfile.mkdtemp()), None))
    backend.load()
    try:
        asyncio.run(_run(backend, args.streams, args.streams, 8, 10**6))  # warm-up
        rates = [asyncio.run(_run(backend, args.streams, args.requests, args.tokens, 1000 * (i + 1)))
                 for i in range(args.runs)]
    finally:
        backend.unload()
    print(f"engine alone, {args.streams} streams x {args.tokens} tokens: "
          + ", ".join(f"{r:.1f}" for r in rates) + " tok/s")


if __name__ == "__main__":
    main()
