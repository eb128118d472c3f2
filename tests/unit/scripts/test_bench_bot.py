"""The pure parts of scripts/bench_bot.py (scripts/bench_repeats.py): the order of the runs and how repetitions add up.

The servers and the timing are exercised by running the benchmark itself (docs/benchmarks.md)."""

from scripts.bench_repeats import combine, order


def test_the_two_modes_take_turns_going_first_and_llama_server_runs_once_at_the_end():
    assert order(["sessions", "history", "llama"], 1) == ["sessions", "history", "llama"]
    assert order(["sessions", "history", "llama"], 2) == ["sessions", "history", "history", "sessions", "llama"]
    assert order(["history", "sessions"], 3) == ["history", "sessions", "sessions", "history", "history", "sessions"]
    assert order(["llama"], 2) == ["llama"]


def _run(wall: float, tokens: int, later: list[float], errors: int = 0, prefilled=100) -> dict:
    return {"wall_s": wall, "turns_expected": 4, "turns_answered": 4 - errors, "errors": errors,
            "error_samples": ["HTTP 503"] if errors else [], "completion_tokens": tokens,
            "tokens_per_s": tokens / wall, "prompt_tokens": 50, "turn1_prompt_tokens_mean": 20.0,
            "ttft_later_s": later, "ttft_first_s": [1.0], "ttft_later_p50_s": None, "ttft_later_p95_s": None,
            "ttft_first_p50_s": 1.0, "cache_hits": 0, "cache_misses": 4, "prefilled_tokens": prefilled,
            "reused_tokens": 10, "prefill_source": "engine counters", "others_cpu_share": 0.1,
            "alone_check": {"checked": 1, "matches": 1, "mismatches": []}}


def test_repetitions_add_up_as_one_run():
    both = combine([_run(10.0, 100, [1.0, 2.0]), _run(30.0, 300, [3.0, 4.0], errors=1)])
    assert both["wall_s"] == 40.0 and both["walls_s"] == [10.0, 30.0]
    assert both["tokens_per_s"] == 10.0  # all tokens over all wall time, not a mean of rates
    assert both["ttft_later_p50_s"] == 2.5  # over every turn of both runs
    assert both["errors"] == 1 and both["turns_answered"] == 7 and both["turns_expected"] == 8
    assert both["prefilled_tokens"] == 200 and both["alone_check"] == {"checked": 2, "matches": 2, "mismatches": []}
    assert combine([_run(10.0, 100, []), _run(10.0, 100, [], prefilled=None)])["prefilled_tokens"] is None


def test_one_run_is_kept_as_it_is():
    one = _run(10.0, 100, [1.0])
    assert combine([one]) == {**one, "walls_s": [10.0]}
