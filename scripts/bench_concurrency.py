"""Concurrent streams: AI Core against llama.cpp's own `llama-server`, side by side in one run.

Both serve the same GGUF (the packaged SmolLM2 of models.json) with the same per-sequence context:
- llama-server (scripts/llama_server.py builds it on first use, ~8 min on 2 cores) with
  `-t <cores> -np 16 -c <16 x context_length>` on 127.0.0.1;
- AI Core as the README's first command starts it (`serve run` of serve_config.yaml with the
  shipped models.json, through scripts/serve_process.py), response cache off.
One server runs at a time (the other is stopped), each gets a warm-up request, then the same
client (scripts/stream_load.py) drives it: streamed /v1/completions of `--tokens` tokens at each
level of concurrent streams (aggregate completion tok/s, TTFT p50/p99, errors), then 256
concurrent /v1/chat/completions clients of 16 tokens each (all served? 503s, wall time, TTFT).
Distinct prompts, end-of-sequence ignored, temperature 0. Run it under the CPU lock on a shared
machine:

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_concurrency [--levels 1,4,16,64]
        [--tokens 64] [--skip-256] [--aicore-only | --llama-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, Optional

from deployments.config import load_models_file
from deployments.weights import resolve_weights
from scripts.llama_server import LlamaServer, check_runs, ensure_binary
from scripts.machine_load import OtherLoad
from scripts.serve_process import ROOT, ServeProcess
from scripts.stream_load import run_load

MODEL = "smollm2-135m-instruct"
KEY = "bench-key-0123456789"
PARALLEL = 16  # llama-server's slots (-np)
CHAT_CLIENTS, CHAT_TOKENS = 256, 16
SERVERS = ("AI Core", "llama-server")


def requests_at(level: int) -> int:
    """Two requests per stream, and at least 8, so a level of 1 or 4 is not a single sample."""
    return max(2 * level, 8)


def measure(base_url: str, headers: dict, model: str, levels: list[int], tokens: int, chat: bool,
            server_pid: int) -> dict:
    warm = run_load(base_url, headers, "completions", model, 1, 1, 8)
    if warm.served != 1:
        raise RuntimeError(f"warm-up request failed: {warm.summary()['errors']}")
    results: dict = {"levels": {}}
    runs = [(str(level), "completions", level, requests_at(level), tokens) for level in levels]
    if chat:
        runs.append(("chat", "chat", CHAT_CLIENTS, CHAT_CLIENTS, CHAT_TOKENS))
    for key, kind, clients, requests, max_tokens in runs:
        others = OtherLoad([server_pid]).start()
        summary = run_load(base_url, headers, kind, model, clients, requests, max_tokens).summary()
        summary["others_cpu_share"] = others.share()
        if kind == "chat":
            results["chat"] = summary
        else:
            results["levels"][key] = summary
        _progress(f"{clients} {'chat clients' if kind == 'chat' else 'streams'}", summary)
    return results


def _progress(label: str, s: dict) -> None:
    print(f"  {label}: {s['tokens_per_s']:.0f} tok/s, wall {s['wall_s']:.1f} s, served {s['served']}/{s['requests']}, "
          f"503 {s['refused_503']}, other errors {s['other_errors']} {s['errors'][:2]}, "
          f"other processes' CPU {percent(s['others_cpu_share'])}", file=sys.stderr, flush=True)


# ---- the report (pure functions of the results) ----

def ratio(ours: Optional[float], theirs: Optional[float]) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(summary: Optional[dict], key: str, fmt: Callable[[float], str]) -> str:
    return "-" if summary is None or summary.get(key) is None else fmt(summary[key])


def _errors(summary: Optional[dict]) -> str:
    if summary is None:
        return "-"
    return str(summary["refused_503"] + summary["other_errors"])


def levels_table(ours: Optional[dict], theirs: Optional[dict], levels: list[int]) -> str:
    header = ["streams", "AI Core tok/s", "llama-server tok/s", "ratio", "AI Core TTFT p50 / p99",
              "llama-server TTFT p50 / p99", "TTFT p50 ratio", "errors (AI Core / llama-server)",
              "other processes' CPU (AI Core / llama-server runs)"]
    rows = []
    for level in levels:
        a = (ours or {}).get("levels", {}).get(str(level))
        b = (theirs or {}).get("levels", {}).get(str(level))
        rows.append([
            str(level), _cell(a, "tokens_per_s", lambda v: f"{v:.0f}"), _cell(b, "tokens_per_s", lambda v: f"{v:.0f}"),
            ratio(a and a["tokens_per_s"], b and b["tokens_per_s"]),
            f"{_cell(a, 'ttft_p50_s', seconds)} / {_cell(a, 'ttft_p99_s', seconds)}",
            f"{_cell(b, 'ttft_p50_s', seconds)} / {_cell(b, 'ttft_p99_s', seconds)}",
            ratio(a and a["ttft_p50_s"], b and b["ttft_p50_s"]),
            f"{_errors(a)} / {_errors(b)}",
            f"{_cell(a, 'others_cpu_share', percent)} / {_cell(b, 'others_cpu_share', percent)}",
        ])
    return markdown_table(header, rows)


def chat_table(ours: Optional[dict], theirs: Optional[dict]) -> str:
    a, b = (ours or {}).get("chat"), (theirs or {}).get("chat")
    served = lambda s: "-" if s is None else f"{s['served']}/{s['requests']}"  # noqa: E731
    count = lambda s, k: "-" if s is None else str(s[k])  # noqa: E731
    value = lambda s, k: None if s is None else s[k]  # noqa: E731
    rows = [
        ["served (all tokens)", served(a), served(b), "-"],
        ["503 refusals", count(a, "refused_503"), count(b, "refused_503"), "-"],
        ["other errors", count(a, "other_errors"), count(b, "other_errors"), "-"],
        ["wall time", _cell(a, "wall_s", seconds), _cell(b, "wall_s", seconds), ratio(value(a, "wall_s"), value(b, "wall_s"))],
        ["TTFT p50", _cell(a, "ttft_p50_s", seconds), _cell(b, "ttft_p50_s", seconds),
         ratio(value(a, "ttft_p50_s"), value(b, "ttft_p50_s"))],
        ["TTFT p99", _cell(a, "ttft_p99_s", seconds), _cell(b, "ttft_p99_s", seconds),
         ratio(value(a, "ttft_p99_s"), value(b, "ttft_p99_s"))],
        ["other processes' CPU", _cell(a, "others_cpu_share", percent), _cell(b, "others_cpu_share", percent), "-"],
    ]
    return markdown_table([f"{CHAT_CLIENTS} chat clients x {CHAT_TOKENS} tokens", *SERVERS, "ratio"], rows)


def report(run: dict) -> str:
    results, levels = run["results"], run["levels"]
    ours, theirs = results.get("AI Core"), results.get("llama-server")
    parts = [
        f"Machine: {run['machine']['nproc']} cores ({run['machine']['cpu']}), {run['machine']['date']}, "
        f"load average at start {run['machine']['load_average']:.2f}",
        f"Command: `{run['command']}`",
        f"Model: {run['model']} ({run['gguf']}), context {run['context_length']} per sequence; llama-server: "
        f"{run['llama_server']}",
        f"Streamed /v1/completions, {run['tokens']} tokens each (end-of-sequence ignored), temperature 0, "
        f"distinct prompts; requests per level: max(2 x streams, 8). Ratios: AI Core / llama-server. "
        f"Other processes' CPU: the share of the machine that processes other than the benchmark and the "
        f"server under test used during that measurement (a shared machine's noise).",
        "",
        levels_table(ours, theirs, levels),
    ]
    if run["chat"]:
        parts += ["", chat_table(ours, theirs)]
    return "\n".join(parts)


# ---- running it ----

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "load_average": os.getloadavg()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `with` blocks stop the servers this script started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16,64", help="comma-separated concurrent streams")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per stream")
    parser.add_argument("--skip-256", action="store_true", help=f"skip the {CHAT_CLIENTS} chat clients")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--aicore-only", action="store_true")
    only.add_argument("--llama-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    _raise_on_sigterm()

    config = load_models_file(ROOT / "models.json").models[MODEL]
    gguf = resolve_weights(config.path, ROOT / "models")
    command = [os.path.relpath(sys.executable, ROOT), "-m", "scripts.bench_concurrency", *sys.argv[1:]]
    run = {"machine": machine(), "command": shlex.join(command), "model": MODEL, "gguf": str(gguf),
           "context_length": config.context_length, "levels": levels, "tokens": args.tokens,
           "chat": not args.skip_256, "llama_server": "not run", "results": {}}

    if not args.aicore_only:  # only then is the binary needed (and built when missing)
        llama = LlamaServer(gguf, threads=len(os.sched_getaffinity(0)), parallel=PARALLEL,
                            context_per_sequence=config.context_length)
        version = check_runs(ensure_binary()).splitlines()
        version = next((line for line in version if line.startswith("version")), version[0])
        run["llama_server"] = f"`{shlex.join([Path(llama.command[0]).name, *llama.command[1:]])}` ({version})"
        print(f"llama-server ({version}):", file=sys.stderr)
        with llama:
            run["results"]["llama-server"] = measure(llama.base_url, {}, MODEL, levels, args.tokens, run["chat"],
                                                     llama.proc.pid)
    if not args.llama_only:
        print("AI Core:", file=sys.stderr)
        env = {"API_KEYS": KEY, "CACHE_ENABLED": "false"}
        with ServeProcess(env=env) as server:
            run["results"]["AI Core"] = measure(server.base_url, {"X-API-Key": KEY}, MODEL, levels, args.tokens,
                                                run["chat"], server.proc.pid)

    print(report(run))
    if args.json:
        args.json.write_text(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
