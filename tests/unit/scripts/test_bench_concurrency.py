"""The pure parts of scripts/bench_concurrency.py: percentiles, outcome counting, SSE accounting, tables.

The servers and the timing are exercised by running the benchmark itself (docs/benchmarks.md)."""

import asyncio
import json

import httpx
import pytest

from scripts.bench_concurrency import chat_table, levels_table, markdown_table, percent, ratio, requests_at, seconds
from scripts.machine_load import busy_ticks, process_ticks
from scripts.stream_load import LoadResult, Outcome, one_stream, percentile, request_body


def test_percentile_interpolates_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_load_result_counts_served_refused_and_failed():
    result = LoadResult(clients=2, max_tokens=4, wall_s=2.0, outcomes=[
        Outcome(ttft_s=0.1, completion_tokens=4, status=200),
        Outcome(ttft_s=0.3, completion_tokens=4, status=200),
        Outcome(status=503, error="HTTP 503"),
        Outcome(ttft_s=0.2, completion_tokens=2, status=200, error="incomplete"),
    ])
    assert (result.served, result.refused_503, result.other_errors) == (2, 1, 1)
    assert result.tokens_per_s == 4.0  # only complete answers count
    assert result.ttft(50) == pytest.approx(0.2)  # of the served ones: 0.1 and 0.3


def test_summary_lists_every_request_by_when_it_was_sent():
    result = LoadResult(clients=2, max_tokens=4, wall_s=2.0, outcomes=[
        Outcome(ttft_s=2.5, sent_s=1.0, completion_tokens=4, status=200),
        Outcome(sent_s=0.0, status=503, error="HTTP 503"),
        Outcome(ttft_s=0.25, sent_s=0.0, completion_tokens=4, status=200),
    ])
    assert result.summary()["sent_and_ttft_s"] == [[0.0, None], [0.0, 0.25], [1.0, 2.5]]


def test_request_bodies_have_distinct_prompts():
    bodies = [request_body("completions", "m", 8, 0.0) for _ in range(50)]
    assert len({b["prompt"] for b in bodies}) == 50
    chat = request_body("chat", "m", 16, 0.0)
    assert chat["messages"][0]["role"] == "user" and "prompt" not in chat
    assert chat["stream_options"] == {"include_usage": True} and chat["ignore_eos"] is True


def _sse(*events) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def _stream(content: bytes, status: int = 200, max_tokens: int = 3) -> Outcome:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))

    async def go():
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await one_stream(client, "/v1/completions", {"max_tokens": max_tokens})

    return asyncio.run(go())


def test_stream_accounting():
    chunks = [{"choices": [{"text": ""}]}, {"choices": [{"text": "a"}]}, {"choices": [{"text": "b"}]},
              {"choices": [], "usage": {"completion_tokens": 3}}]
    done = _stream(_sse(*chunks))
    assert done.error is None and done.completion_tokens == 3 and done.ttft_s is not None
    chat = _stream(_sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]},
                        {"choices": [{"delta": {"content": "x"}}]}, {"choices": [], "usage": {"completion_tokens": 3}}))
    assert chat.error is None and chat.ttft_s is not None
    short = _stream(_sse(*chunks[:3]))  # no usage: cannot prove every token came
    assert short.error and short.error.startswith("incomplete")
    failed = _stream(_sse({"choices": [{"text": "a"}]}, {"error": {"message": "boom"}}))
    assert failed.error and "boom" in failed.error
    refused = _stream(b'{"error": {"type": "overloaded"}}', status=503)
    assert refused.status == 503 and refused.error.startswith("HTTP 503")


def test_formatting_helpers():
    assert ratio(99.0, 314.0) == "0.32"
    assert ratio(None, 1.0) == ratio(1.0, None) == ratio(1.0, 0.0) == "-"
    assert seconds(0.0774) == "77 ms" and seconds(9.12) == "9.1 s" and seconds(None) == "-"
    assert requests_at(1) == 8 and requests_at(16) == 32
    assert percent(0.034) == "3%" and percent(None) == "-"
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def _summary(tps: float, p50: float, wall: float = 10.0, refused: int = 0) -> dict:
    return {"tokens_per_s": tps, "ttft_p50_s": p50, "ttft_p99_s": p50 * 2, "wall_s": wall, "served": 256 - refused,
            "requests": 256, "refused_503": refused, "other_errors": 0, "others_cpu_share": 0.05}


def test_tables_side_by_side_and_with_one_server_missing():
    ours = {"levels": {"16": _summary(99.0, 9.1)}, "chat": _summary(0, 33.7, wall=60.6, refused=3)}
    theirs = {"levels": {"16": _summary(314.0, 0.354)}, "chat": _summary(0, 11.2, wall=21.7)}
    table = levels_table(ours, theirs, [16])
    assert table.splitlines()[2] == "| 16 | 99 | 314 | 0.32 | 9.1 s / 18.2 s | 354 ms / 708 ms | 25.71 | 0 / 0 | 5% / 5% |"
    chat = chat_table(ours, theirs).splitlines()
    assert "| served (all tokens) | 253/256 | 256/256 | - |" in chat
    assert "| 503 refusals | 3 | 0 | - |" in chat
    assert "| wall time | 60.6 s | 21.7 s | 2.79 |" in chat
    alone = levels_table(ours, None, [16]).splitlines()[2]
    assert alone == "| 16 | 99 | - | - | 9.1 s / 18.2 s | - / - | - | 0 / - | 5% / - |"
    assert "| wall time | - | 21.7 s | - |" in chat_table(None, theirs).splitlines()


def test_proc_parsing():
    stat = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 3 0 0\n"
    assert busy_ticks(stat) == 100 + 5 + 50 + 3 + 2 + 7  # idle and iowait are not busy
    line = "4242 (ray::Serve Replica) S 1 4242 4200 0 -1 4194304 100 0 0 0 35 12 0 0 20 0 9 0 1234 0 0"
    assert process_ticks(line) == (4200, 47)


def test_own_process_ticks_are_counted_as_ours():
    import os
    import time

    from scripts.machine_load import _ours

    before = _ours(set(), os.getpid())
    spent = time.process_time()
    while time.process_time() - spent < 0.1:  # CPU time, not wall time: as long as it takes
        sum(i * i for i in range(10_000))
    assert _ours(set(), os.getpid()) - before >= 0.05 * os.sysconf("SC_CLK_TCK")
