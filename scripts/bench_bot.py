"""The bots' real workload: many chats with history, AI Core (with and without sessions) against llama-server.

N chats at once (`--chats`, default 32), T turns each (`--turns`, default 6): every chat shares one
system prompt of about 250 tokens, each user turn is short and distinct (no response-cache hit is
possible; the hits are counted from the `X-Cache` header anyway), each answer is at most 32 tokens
(temperature 0, streamed over SSE so the first token's time is seen), `--think-s` seconds between a
chat's turns. Three runs, one after another, each alone on the machine (its server started for it
and stopped after it, one warm-up request first):
  sessions  AI Core (`serve run` of serve_config.yaml as README command one starts it) with
            `session_id`: turn 1 sends the system prompt and the question, later turns only the question;
  history   the same server, the client resending the whole conversation every turn;
  llama     llama.cpp's own llama-server (scripts/llama_server.py), same GGUF and threads,
            `-np 16`, `-c 16 x context_length`, whole conversation every turn.
All three use /v1/chat/completions. Per run: wall time, completion tokens per second of wall time,
first-token p50/p95 of turns >= 2, turns answered and errors, cache hits, prompt tokens prefilled
and reused (AI Core: its engine counters from /api/v1/metrics, read before and after the run;
llama-server: the `timings` prompt_n / cache_n of each answer), and a check that answers match what
the same request gives alone: the last turn of `--verify` chats sent again, whole history, not
streamed, response cache bypassed, once the run is over. Ratios count only when both runs answered
every turn. Run it under the CPU lock on a shared machine:

    flock /tmp/aicore-cpu.lock .venv/bin/python -m scripts.bench_bot [--chats 32] [--turns 6]
        [--think-s 0] [--runs sessions,history,llama] [--repeat 1] [--redis] [--verify 3] [--json out.json]

`--repeat 2` runs each AI Core mode twice, in the order sessions, history, history, sessions: a
server's first run on a machine tends to run a little slower than the next, and a single pair in
a fixed order then decides a comparison that is within that difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import httpx
from prometheus_client.parser import text_string_to_metric_families

from deployments.config import load_models_file
from deployments.weights import resolve_weights
from scripts.bench_concurrency import (
    KEY,
    MODEL,
    PARALLEL,
    _raise_on_sigterm,
    machine,
    markdown_table,
    percent,
    ratio,
    seconds,
)
from scripts.bench_repeats import combine, order
from scripts.llama_server import LlamaServer, check_runs, ensure_binary
from scripts.machine_load import OtherLoad
from scripts.serve_process import ROOT, ServeProcess
from scripts.stream_load import Outcome, one_stream, percentile, run_load

MAX_TOKENS = 32
RUNS = {"sessions": "AI Core, sessions", "history": "AI Core, whole history", "llama": "llama-server"}
PATH = "/v1/chat/completions"
SYSTEM_PROMPT = (
    "You are Nova, the support assistant of Northwind Outfitters, a shop that sells outdoor clothing, tents, "
    "backpacks and camping stoves online and in three stores. Follow these rules in every answer. Be friendly, "
    "calm and brief: answer in one or two short sentences unless the customer asks for details. Never invent "
    "order numbers, prices, delivery dates or stock levels; when you do not know, say so and offer to pass the "
    "question to a human colleague. Orders ship within two working days; standard delivery takes three to five "
    "working days, express delivery one to two. Returns are free within thirty days of delivery if the item is "
    "unused and in its original packaging; refunds reach the customer's account within ten days of the return "
    "arriving. Stores open Monday to Saturday from nine to seven and are closed on Sundays and public holidays. "
    "Every tent and backpack has a two-year warranty; stoves have one year. Do not discuss politics, medicine or "
    "legal matters. Never ask for a full card number or a password. If a customer is upset, apologise once and "
    "focus on solving the problem. Address the customer by name when they give it. End with a question only when "
    "you need more information to help."
)
QUESTIONS = (
    "Where is my order?", "Can I return a tent I used once?", "What time do you open on Saturday?",
    "Which backpack is best for a weekend hike?", "How long does express delivery take?",
    "Is the warranty valid abroad?", "Can I change my delivery address?", "Do you sell gas for the stoves?",
    "My zip broke after a week, what now?", "Can I pay by bank transfer?", "Are you open on Sunday?",
    "How do I clean a down jacket?", "When will my refund arrive?", "Do you have kids' sizes?",
    "Can I pick up my order in a store?", "Thanks, that is all for today.",
)


def question(chat: int, turn: int) -> str:
    """Distinct for every (chat, turn): the customer number and message number lead it."""
    return f"Customer #{1000 + chat}, message {turn + 1}: {QUESTIONS[(chat * 5 + turn * 3) % len(QUESTIONS)]}"


# ---- one run: the chats, the counters, the alone-check ----

async def one_chat(client: httpx.AsyncClient, chat: int, turns: int, think_s: float, sessions: bool,
                   run_tag: str) -> tuple[list[Outcome], list[dict]]:
    """The chat's turns in order (a failed turn ends it); and its conversation up to the last question."""
    history: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
    outcomes: list[Outcome] = []
    for turn in range(turns):
        if turn and think_s:
            await asyncio.sleep(think_s)
        history.append({"role": "user", "content": question(chat, turn)})
        sent = history[-1:] if sessions and turn else history  # a session sends only the new turn
        body = {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}, "messages": list(sent)}
        if sessions:
            body["session_id"] = f"bench-bot-{run_tag}-{chat}"
        outcome = await one_stream(client, PATH, body, exact=False)
        outcomes.append(outcome)
        if outcome.error is not None:
            break
        if turn < turns - 1:
            history.append({"role": "assistant", "content": outcome.text})
    return outcomes, history


async def drive(base_url: str, headers: dict, chats: int, turns: int, think_s: float, sessions: bool) -> dict:
    limits = httpx.Limits(max_connections=chats, max_keepalive_connections=0)  # as stream_load: no kept-alive
    run_tag = f"{os.getpid()}-{int(time.time())}"
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(900, connect=60)) as client:
        started = time.perf_counter()
        done = await asyncio.gather(*(one_chat(client, c, turns, think_s, sessions, run_tag) for c in range(chats)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "chats": [outcomes for outcomes, _ in done], "histories": [h for _, h in done]}


def engine_counters(base_url: str, headers: dict) -> Optional[dict]:
    """AI Core's engine counters for MODEL since load (`prefilled` / `reused` prompt tokens, and
    every other `aicore_engine_*` counter by its sample name), None if absent. Replicas publish
    their figures every 0.5-2 s: wait that long before reading."""
    time.sleep(2.5)
    r = httpx.get(base_url + "/api/v1/metrics", headers=headers, timeout=30)
    if r.status_code != 200:
        return None
    wanted = {"aicore_engine_prefill_tokens_total": "prefilled", "aicore_engine_prefix_reused_tokens_total": "reused"}
    found: dict = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if (sample.labels.get("model") == MODEL and sample.name.startswith("aicore_engine_")
                    and sample.name.endswith(("_total", "_sum", "_count"))):
                name = wanted.get(sample.name, sample.name.removeprefix("aicore_engine_"))
                found[name] = found.get(name, 0) + sample.value
    return found if {"prefilled", "reused"} <= set(found) else None


def check_alone(base_url: str, headers: dict, done: dict, turns: int, count: int, extra: dict) -> dict:
    """Send the last turn of `count` fully answered chats again, alone and not streamed; compare the texts."""
    complete = [c for c, outcomes in enumerate(done["chats"])
                if len(outcomes) == turns and all(o.error is None for o in outcomes)]
    picked = sorted({complete[round(i * (len(complete) - 1) / max(count - 1, 1))] for i in range(count)}
                    ) if complete and count else []
    results = []
    with httpx.Client(base_url=base_url, headers={**headers, **extra.get("headers", {})}, timeout=600) as client:
        for chat in picked:
            body = {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0, "messages": done["histories"][chat],
                    **extra.get("body", {})}
            r = client.post(PATH, json=body)
            alone = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else f"HTTP {r.status_code}"
            concurrent = done["chats"][chat][-1].text
            results.append({"chat": chat, "match": alone == concurrent, "concurrent": concurrent, "alone": alone})
    return {"checked": len(results), "matches": sum(r["match"] for r in results),
            "mismatches": [r for r in results if not r["match"]]}


def summarize(done: dict, turns: int) -> dict:
    flat = [o for outcomes in done["chats"] for o in outcomes]
    ok = [o for o in flat if o.error is None]
    firsts = [outcomes[0] for outcomes in done["chats"] if outcomes and outcomes[0].error is None]
    later = [o.ttft_s for outcomes in done["chats"] for o in outcomes[1:] if o.error is None and o.ttft_s is not None]
    first = [o.ttft_s for o in firsts if o.ttft_s is not None]
    completion = sum(o.completion_tokens for o in ok)
    timings = [o.timings for o in ok if o.timings]
    summary = {
        "wall_s": done["wall_s"], "turns_expected": len(done["chats"]) * turns, "turns_answered": len(ok),
        "errors": len(flat) - len(ok), "error_samples": sorted({o.error for o in flat if o.error})[:5],
        "completion_tokens": completion, "tokens_per_s": completion / done["wall_s"],
        "prompt_tokens": sum((o.usage or {}).get("prompt_tokens", 0) for o in ok),
        "turn1_prompt_tokens_mean": sum((o.usage or {}).get("prompt_tokens", 0) for o in firsts) / max(len(firsts), 1),
        "ttft_later_p50_s": percentile(later, 50), "ttft_later_p95_s": percentile(later, 95),
        "ttft_first_p50_s": percentile(first, 50), "ttft_later_s": later, "ttft_first_s": first,
        "cache_hits": sum(o.cache == "HIT" for o in flat), "cache_misses": sum(o.cache == "MISS" for o in flat),
        "prefilled_tokens": None, "reused_tokens": None, "prefill_source": "not available",
    }
    if timings:  # llama-server: every answer says what it computed and what its slot's cache held
        summary.update(prefilled_tokens=sum(t.get("prompt_n", 0) for t in timings),
                       reused_tokens=sum(t.get("cache_n", 0) for t in timings),
                       prefill_source=f"timings of {len(timings)}/{len(ok)} answers")
    return summary


def measure(base_url: str, headers: dict, args, sessions: bool, server_pid: int, aicore: bool) -> dict:
    warm = run_load(base_url, headers, "completions", MODEL, 1, 1, 8)
    if warm.served != 1:
        raise RuntimeError(f"warm-up request failed: {warm.summary()['errors']}")
    before = engine_counters(base_url, headers) if aicore else None
    others = OtherLoad([server_pid]).start()
    done = asyncio.run(drive(base_url, headers, args.chats, args.turns, args.think_s, sessions))
    share = others.share()
    summary = summarize(done, args.turns)
    summary["others_cpu_share"] = share
    after = engine_counters(base_url, headers) if aicore else None
    if before and after:
        summary.update(prefilled_tokens=int(after["prefilled"] - before["prefilled"]),
                       reused_tokens=int(after["reused"] - before["reused"]), prefill_source="engine counters (/api/v1/metrics)",
                       engine={name: round(after[name] - before.get(name, 0), 3) for name in after})
    elif aicore:
        summary["prefill_source"] = "engine counters not found in /api/v1/metrics"
    extra = {"body": {"cache": False}, "headers": {"Cache-Control": "no-cache"}} if aicore else {}
    summary["alone_check"] = check_alone(base_url, headers, done, args.turns, args.verify, extra)
    s = summary
    print(f"  {s['turns_answered']}/{s['turns_expected']} turns, {s['errors']} errors, wall {s['wall_s']:.1f} s, "
          f"{s['tokens_per_s']:.1f} tok/s, later-turn TTFT p50 {seconds(s['ttft_later_p50_s'])}, "
          f"alone check {s['alone_check']['matches']}/{s['alone_check']['checked']}", file=sys.stderr, flush=True)
    return summary


# ---- the report ----

def _tokens(s: dict) -> str:
    if s.get("prefilled_tokens") is None:
        return "-"
    return f"{s['prefilled_tokens']} / {s['reused_tokens']}"


def _engine_time(s: dict) -> str:
    e = s.get("engine") or {}
    if "prefill_seconds_total" not in e:
        return "-"
    return f"{e['prefill_seconds_total']:.1f} / {e['decode_seconds_total']:.1f}; {e.get('step_tokens_count', 0):.0f}"


def _saved(s: dict) -> str:
    e = s.get("engine") or {}
    if "saved_prompt_saved_total" not in e:
        return "-"
    return f"{e['saved_prompt_saved_total']:.0f} / {e['saved_prompt_restored_total']:.0f}"


def counted(a: Optional[dict], b: Optional[dict]) -> bool:
    """A ratio counts only when both runs answered every turn without an error."""
    return all(s is not None and s["errors"] == 0 and s["turns_answered"] == s["turns_expected"] for s in (a, b))


def report(run: dict) -> str:
    res = run["results"]
    names = [n for n in RUNS if n in res]
    rows = [[label] + [fmt(res[n]) for n in names] for label, fmt in (
        ("turns answered", lambda s: f"{s['turns_answered']}/{s['turns_expected']}"),
        ("errors", lambda s: str(s["errors"])),
        ("wall time", lambda s: seconds(s["wall_s"]) + (
            f" ({' + '.join(seconds(w) for w in s['walls_s'])})" if len(s["walls_s"]) > 1 else "")),
        ("throughput (completion tok / wall s)", lambda s: f"{s['tokens_per_s']:.1f}"),
        ("completion tokens", lambda s: str(s["completion_tokens"])),
        ("first token p50, turns >= 2", lambda s: seconds(s["ttft_later_p50_s"])),
        ("first token p95, turns >= 2", lambda s: seconds(s["ttft_later_p95_s"])),
        ("first token p50, turn 1", lambda s: seconds(s["ttft_first_p50_s"])),
        ("prompt tokens (usage, all turns)", lambda s: str(s["prompt_tokens"])),
        ("prompt tokens prefilled / reused", _tokens),
        ("engine seconds: prefill / decode; steps", _engine_time),
        ("KV saved to host RAM / restored", _saved),
        ("response-cache hits (misses)", lambda s: f"{s['cache_hits']} ({s['cache_misses']})"),
        ("answers equal to the same request alone", lambda s: f"{s['alone_check']['matches']}/{s['alone_check']['checked']}"),
        ("other processes' CPU", lambda s: percent(s["others_cpu_share"])),
    )]
    ratio_rows = []
    for a, b in (("sessions", "llama"), ("history", "llama"), ("sessions", "history")):
        if a in res and b in res:
            ok = counted(res[a], res[b])
            tput = ratio(res[a]["tokens_per_s"], res[b]["tokens_per_s"]) if ok else "- (errors)"
            ttft = ratio(res[a]["ttft_later_p50_s"], res[b]["ttft_later_p50_s"]) if ok else "- (errors)"
            ratio_rows.append([f"{RUNS[a]} / {RUNS[b]}", tput, ttft])
    m = run["machine"]
    parts = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['date']}, load average at start {m['load_average']:.2f}",
        f"Command: `{run['command']}`",
        f"Model: {MODEL} ({run['gguf']}), context {run['context_length']} per sequence; AI Core store: {run['store']}; "
        f"llama-server: {run['llama_server']}",
        f"Order of the runs: {', '.join(run['order'])}. "
        f"{run['chats']} chats x {run['turns']} turns, think time {run['think_s']} s, system prompt + first question "
        f"{_turn1(res)} prompt tokens, answers <= {MAX_TOKENS} tokens at temperature 0, streamed. Prefilled / reused: "
        + "; ".join(f"{RUNS[n]}: {res[n]['prefill_source']}" for n in names) + ".",
        "",
        markdown_table(["", *(RUNS[n] for n in names)], rows),
    ]
    if ratio_rows:
        parts += ["", markdown_table(["ratio", "throughput (higher: faster)", "first token p50, turns >= 2 (lower: faster)"],
                                        ratio_rows)]
    for n in names:
        if res[n]["error_samples"]:
            parts.append(f"{RUNS[n]} errors: {res[n]['error_samples']}")
        for bad in res[n]["alone_check"]["mismatches"]:
            parts.append(f"{RUNS[n]} chat {bad['chat']}: concurrent {bad['concurrent']!r} != alone {bad['alone']!r}")
    return "\n".join(parts)


def _turn1(res: dict) -> str:
    return next((f"{s['turn1_prompt_tokens_mean']:.0f}" for s in res.values() if s["turn1_prompt_tokens_mean"]), "?")


# ---- running it ----

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--think-s", type=float, default=0.0, help="seconds between a chat's turns")
    parser.add_argument("--runs", default="sessions,history,llama", help="which runs, comma-separated")
    parser.add_argument("--redis", action="store_true", help="AI Core with REDIS_URL: a private redis-server")
    parser.add_argument("--repeat", type=int, default=1,
                        help="AI Core's runs this many times each, taking turns going first; figures added up")
    parser.add_argument("--verify", type=int, default=3, help="chats whose last turn is sent again alone")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if unknown := set(runs) - set(RUNS):
        parser.error(f"unknown runs {sorted(unknown)}: choose from {', '.join(RUNS)}")
    _raise_on_sigterm()

    config = load_models_file(ROOT / "models.json").models[MODEL]
    gguf = resolve_weights(config.path, ROOT / "models")
    command = [os.path.relpath(sys.executable, ROOT), "-m", "scripts.bench_bot", *sys.argv[1:]]
    run = {"machine": machine(), "command": shlex.join(command), "gguf": str(gguf), "context_length": config.context_length,
           "chats": args.chats, "turns": args.turns, "think_s": args.think_s, "llama_server": "not run",
           "store": "Redis (private redis-server)" if args.redis else "in-process (no REDIS_URL)", "results": {}}
    llama = None
    if "llama" in runs:  # built (when missing) before any run, never during one
        llama = LlamaServer(gguf, threads=len(os.sched_getaffinity(0)), parallel=PARALLEL,
                            context_per_sequence=config.context_length)
        version = check_runs(ensure_binary()).splitlines()
        version = next((line for line in version if line.startswith("version")), version[0])
        run["llama_server"] = f"`{shlex.join([Path(llama.command[0]).name, *llama.command[1:]])}` ({version})"

    redis = None
    try:
        env = {"API_KEYS": KEY}
        if args.redis and {"sessions", "history"} & set(runs):
            from tests.integration.redis_process import RedisProcess

            redis = RedisProcess().start()
            env["REDIS_URL"] = redis.url
        measured: dict[str, list[dict]] = {}
        for name in order(runs, args.repeat):
            print(f"{RUNS[name]}:", file=sys.stderr, flush=True)
            if name == "llama":
                with llama:
                    measured.setdefault(name, []).append(
                        measure(llama.base_url, {}, args, False, llama.proc.pid, aicore=False))
                continue
            with ServeProcess(env=env) as server:  # a fresh server per run: nothing cached from the other
                measured.setdefault(name, []).append(measure(server.base_url, {"X-API-Key": KEY}, args,
                                                             name == "sessions", server.proc.pid, aicore=True))
        run["results"] = {name: combine(measured[name]) for name in RUNS if name in measured}
        run["order"] = order(runs, args.repeat)
    finally:
        if redis:
            redis.stop()

    print(report(run))
    if args.json:
        args.json.write_text(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
