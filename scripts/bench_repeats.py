"""Repeated benchmark runs: the order they run in (ABBA) and one mode's repetitions added up as one run
(scripts/bench_bot.py --repeat)."""

from __future__ import annotations

from scripts.stream_load import percentile


def combine(runs: list[dict]) -> dict:
    """One mode's repetitions as one run: times, tokens and turns added, percentiles over every turn."""
    if len(runs) == 1:
        return {**runs[0], "walls_s": [runs[0]["wall_s"]]}
    add = lambda name: sum(r[name] for r in runs)  # noqa: E731
    later = [t for r in runs for t in r["ttft_later_s"]]
    first = [t for r in runs for t in r["ttft_first_s"]]
    checks = [r["alone_check"] for r in runs]
    counted_prefill = all(r["prefilled_tokens"] is not None for r in runs)
    return {
        "wall_s": add("wall_s"), "walls_s": [r["wall_s"] for r in runs], "turns_expected": add("turns_expected"),
        "turns_answered": add("turns_answered"), "errors": add("errors"),
        "error_samples": sorted({e for r in runs for e in r["error_samples"]})[:5],
        "completion_tokens": add("completion_tokens"), "tokens_per_s": add("completion_tokens") / add("wall_s"),
        "prompt_tokens": add("prompt_tokens"),
        "turn1_prompt_tokens_mean": sum(r["turn1_prompt_tokens_mean"] for r in runs) / len(runs),
        "ttft_later_p50_s": percentile(later, 50), "ttft_later_p95_s": percentile(later, 95),
        "ttft_first_p50_s": percentile(first, 50), "ttft_later_s": later, "ttft_first_s": first,
        "cache_hits": add("cache_hits"), "cache_misses": add("cache_misses"),
        "prefilled_tokens": add("prefilled_tokens") if counted_prefill else None,
        "reused_tokens": add("reused_tokens") if counted_prefill else None,
        "prefill_source": runs[0]["prefill_source"],
        "others_cpu_share": sum(r["others_cpu_share"] for r in runs) / len(runs),
        "engine": {name: sum(r.get("engine", {}).get(name, 0) for r in runs) for name in runs[0].get("engine", {})},
        "alone_check": {"checked": sum(c["checked"] for c in checks), "matches": sum(c["matches"] for c in checks),
                        "mismatches": [m for c in checks for m in c["mismatches"]]},
    }


def order(runs: list[str], repeat: int) -> list[str]:
    """Every run `repeat` times; AI Core's two modes take turns going first (ABBA...), so that what
    the first of a pair pays (or the second gains) weighs on both modes alike; llama-server once."""
    ours = [r for r in runs if r != "llama"]
    planned = []
    for i in range(repeat):
        planned += ours if i % 2 == 0 else ours[::-1]
    return planned + (["llama"] if "llama" in runs else [])
