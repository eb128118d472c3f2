"""Coalescing: the first chunk at once, then text gathered per window; the window grows under load."""

import asyncio

from core.types import GenerationChunk
from deployments.streaming import coalesce, load_scaled_interval


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


def test_coalesced_text_keeps_the_log_probabilities_of_its_tokens():
    async def tokens():
        for piece in ["a", "b", "c"]:
            yield GenerationChunk(text=piece, logprobs=((piece.encode(), -1.0, ()),))
        yield GenerationChunk(finish_reason="stop")

    async def collect():
        return [c async for c in coalesce(tokens(), 10.0)]

    out = asyncio.run(collect())
    assert [[p for p, _, _ in c.logprobs] for c in out] == [[b"a"], [b"b", b"c"], []]


def test_cancelling_a_waiting_consumer_closes_the_source_before_coalesce_returns():
    """A client that leaves while its request waits for the engine: the source (the engine's
    stream, which takes the request out of the queue in its `finally`) must be closed by the time
    the consumer's cancellation ends, not at some later turn of the event loop."""
    closed = []

    async def waiting_source():
        try:
            await asyncio.Event().wait()  # never a first chunk: still queued
            yield GenerationChunk(text="never")
        finally:
            closed.append("source")

    async def main():
        async def consume():
            async for _ in coalesce(waiting_source(), 0.05):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)  # suspended inside coalesce, waiting for the first chunk
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return list(closed)  # what had happened when the consumer's cancellation ended

    assert asyncio.run(main()) == ["source"]
