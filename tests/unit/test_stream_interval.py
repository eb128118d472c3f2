"""Coalescing: the first chunk at once, then text gathered per window; the window grows under load."""

import asyncio

from deployments.streaming import coalesce, load_scaled_interval
from core.types import GenerationChunk


def test_interval_keeps_the_base_for_few_streams_and_grows_with_many():
    streams = {"n": 1}
    interval = load_scaled_interval(0.05, lambda: streams["n"])
    assert interval() == 0.05
    streams["n"] = 4
    assert interval() == 0.05
    streams["n"] = 16
    assert abs(interval() - 0.2) < 1e-9
    streams["n"] = 1000
    assert abs(interval() - 0.4) < 1e-9  # at most 8 x


def test_coalesce_reads_the_window_for_each_gathering():
    async def tokens():
        for piece in ["a", "b", "c", "d"]:
            yield GenerationChunk(text=piece)
        yield GenerationChunk(finish_reason="stop")

    async def collect(window):
        return [c async for c in coalesce(tokens(), window)]

    calls = []

    def window():
        calls.append(1)
        return 10.0  # long: everything after the first chunk gathers until the end

    out = asyncio.run(collect(window))
    assert [c.text for c in out] == ["a", "bcd", ""] and out[-1].finish_reason == "stop"
    assert calls  # read at run time, not fixed at the start
    assert [c.text for c in asyncio.run(collect(0))] == ["a", "b", "c", "d", ""]
