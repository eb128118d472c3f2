"""Single-stream decode speed through the whole stack versus llama-cpp-python in one process.

Whole stack: HTTP -> Serve proxy -> auth -> ingress -> handle -> model replica -> SSE back.
Baseline: the same GGUF, same threads and context, decoded with `Llama.generate` in this
process. Both decode exactly N tokens (greedy, end-of-sequence ignored); decode speed is
(N - 1) / (time of last token - time of first token). Runs alternate baseline / stack /
baseline so a machine that slows down mid-run does not flatter either side.

    .venv/bin/python -m scripts.bench_decode [--tokens 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from deployments.config import load_models_file
from deployments.weights import resolve_weights
from scripts.serve_process import ROOT, ServeProcess

MODEL = "smollm2-135m-instruct"
PROMPT = "Write a long story about a lighthouse keeper and the sea."
KEY = "bench-key-0123456789"


def direct_run(llm, tokens: int, text: str = PROMPT) -> tuple[float, float]:
    """Returns (time to first token, decode tokens/s)."""
    prompt = llm.tokenize(text.encode(), add_bos=True)
    started = time.perf_counter()
    stamps = []
    for _ in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, repeat_penalty=1.0):
        stamps.append(time.perf_counter())
        if len(stamps) == tokens:
            break
    return stamps[0] - started, (tokens - 1) / (stamps[-1] - stamps[0])


def stack_run(base_url: str, tokens: int, prompt: str = PROMPT) -> tuple[float, float]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    stamps, usage = [], None
    with httpx.stream("POST", base_url + "/v1/completions", json=body, headers={"X-API-Key": KEY}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"]:
                stamps.append(time.perf_counter())
            usage = event.get("usage") or usage
    assert usage and usage["completion_tokens"] == tokens, usage
    return stamps[0] - started, (tokens - 1) / (stamps[-1] - stamps[0])


def load_direct(threads: int = 0):
    """The shipped entry's GGUF in this process, with its threads (or `threads`)."""
    from llama_cpp import Llama

    config = load_models_file(ROOT / "models.json").models[MODEL]
    path = resolve_weights(config.path, ROOT / "models")
    threads = threads or config.threads
    return Llama(model_path=str(path), n_ctx=config.context_length, n_threads=threads,
                 n_threads_batch=threads, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    llm = load_direct()
    direct_run(llm, 8)  # warm-up
    baseline = [direct_run(llm, args.tokens) for _ in range(args.runs)]

    stacks = {}
    configs = (("whole stack, only SmolLM2 loaded", _single_model_file()), ("whole stack, shipped models.json", None))
    for label, models_file in configs:
        server_args = {"model_config_path": str(models_file)} if models_file else {}
        with ServeProcess(env={"API_KEYS": KEY}, args=server_args) as server:
            stack_run(server.base_url, 8)  # warm-up
            stacks[label] = [stack_run(server.base_url, args.tokens) for _ in range(args.runs)]
            if models_file is None:  # what an idle Ray cluster alone costs the same in-process loop
                beside_ray = [direct_run(llm, args.tokens) for _ in range(args.runs)]

    baseline += [direct_run(llm, args.tokens) for _ in range(args.runs)]

    b_tps = statistics.median(t for _, t in baseline)
    b_ttft = statistics.median(f for f, _ in baseline)
    print(f"\nSingle-stream decode, {MODEL}, {args.tokens} tokens, median of {args.runs} stack / "
          f"{2 * args.runs} direct runs\n")
    spread = lambda runs: f"{min(t for _, t in runs):.0f}-{max(t for _, t in runs):.0f}"  # noqa: E731
    print("| path | decode tok/s (median) | range | time to first token | ratio to baseline |")
    print("|---|---|---|---|---|")
    print(f"| llama-cpp-python in one process (baseline) | {b_tps:.1f} | {spread(baseline)} | {b_ttft * 1000:.0f} ms | 1.000 |")
    rows = {**stacks, "llama-cpp-python in one process, Ray cluster idle beside it (not the stack)": beside_ray}
    for label, runs in rows.items():
        s_tps = statistics.median(t for _, t in runs)
        s_ttft = statistics.median(f for f, _ in runs)
        print(f"| {label} | {s_tps:.1f} | {spread(runs)} | {s_ttft * 1000:.0f} ms | {s_tps / b_tps:.3f} |")


def _single_model_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: data["models"][MODEL]}
    path = Path(tempfile.mkstemp(prefix="aicore-bench-", suffix=".json")[1])
    path.write_text(json.dumps(data))
    return path


if __name__ == "__main__":
    main()
