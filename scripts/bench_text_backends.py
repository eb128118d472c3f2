"""Aggregate tokens/s and TTFT of the transformers and ONNX text backends at 1 and 16 concurrent
requests, one sequence at a time (`parallel: 1`) against continuous batching (`parallel: 16`),
in-process through the backends (no Ray, no HTTP), on the real SmolLM2-135M-Instruct.

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_text_backends      # --tokens 32 --threads 2

Every request is a distinct chat prompt, greedy, `ignore_eos`, `--tokens` new tokens; all of a
round's requests are submitted at once. TTFT is from submission to the first text. The batched
rounds also check that every greedy answer equals the same request's answer alone. Converted
weights (GGUF -> SafeTensors ~35 s, SafeTensors -> ONNX) are built once into MODEL_CACHE_DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

TOPICS = ["a lighthouse keeper", "a lost cat", "the first snow", "a broken clock", "a market in Lisbon",
          "a robot gardener", "an old violin", "a night train", "a desert well", "a chess prodigy",
          "a beekeeper", "a paper boat", "a mountain rescue", "a quiet library", "a storm at sea", "a baker"]
BACKENDS = {"transformers fp32": ("transformers", "safetensors"), "ONNX fp32": ("onnx", "onnx")}
MODES = {"serial (parallel 1)": 1, "batched (parallel 16)": 16}


def _request(i: int, tokens: int):
    from core.types import GenerationRequest, SamplingParams

    sampling = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    return GenerationRequest(f"bench-{i}", sampling, messages=(
        {"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."},))


async def _one(backend, request, t0: float) -> tuple[str, float, int]:
    text, first, final = "", None, None
    async for chunk in backend.stream(request):
        if chunk.text and first is None:
            first = time.perf_counter() - t0
        text += chunk.text
        final = chunk
    return text, first, final.usage.completion_tokens


async def _round(backend, clients: int, tokens: int) -> dict:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_one(backend, _request(i, tokens), t0) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {"tok_s": sum(r[2] for r in results) / wall, "ttft_p50": statistics.median(r[1] for r in results),
            "texts": [r[0] for r in results]}


def _load(kind: str, path, parallel: int, threads: int):
    from deployments.backends import get_backend
    from deployments.config import parse_models

    entry = {"type": kind, "path": str(path), "threads": threads, "device": "cpu", "context_length": 2048,
             "parallel": parallel}
    backend = get_backend(kind)("bench", parse_models({"models": {"bench": entry}}).models["bench"], path)
    backend.load()
    return backend


def measure(threads: int, tokens: int, modes: dict[str, int]) -> list[dict]:
    from scripts.bench_formats import _paths

    paths = _paths()
    rows = []
    for label, (kind, where) in BACKENDS.items():
        alone: list[str] = []
        for mode, parallel in modes.items():
            backend = _load(kind, paths[where], parallel, threads)
            asyncio.run(_round(backend, 2, 4))  # warm-up
            for clients in (1, 16):
                r = asyncio.run(_round(backend, clients, tokens))
                if parallel == 1 and clients == 16:
                    alone = r["texts"]  # one at a time: each request decoded alone
                same = sum(a == b for a, b in zip(alone, r["texts"])) if parallel > 1 and clients == 16 else None
                rows.append({"backend": label, "mode": mode, "clients": clients, "tok_s": round(r["tok_s"], 1),
                             "ttft_p50_s": round(r["ttft_p50"], 3), "same_as_alone": same})
                print(json.dumps(rows[-1]), flush=True)
            backend.unload()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--threads", type=int, default=2, help="engine threads (models.json `threads`)")
    parser.add_argument("--serial-only", action="store_true", help="only `parallel: 1` (e.g. on an older checkout)")
    args = parser.parse_args()
    modes = {m: p for m, p in MODES.items() if p == 1 or not args.serial_only}
    rows = measure(args.threads, args.tokens, modes)
    print(f"\nSmolLM2-135M-Instruct, greedy, {args.tokens} new tokens a request, {args.threads} threads, CPU\n")
    print("| backend | mode | concurrent | aggregate tok/s | TTFT p50 s | x serial | greedy = alone |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        serial = next(s for s in rows if s["backend"] == r["backend"] and s["clients"] == r["clients"]
                      and MODES[s["mode"]] == 1)
        same = "" if r["same_as_alone"] is None else f"{r['same_as_alone']}/16"
        print(f"| {r['backend']} | {r['mode']} | {r['clients']} | {r['tok_s']} | {r['ttft_p50_s']} | "
              f"{r['tok_s'] / serial['tok_s']:.2f} | {same} |")


if __name__ == "__main__":
    main()
