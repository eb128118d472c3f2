"""MicroBatcher logic with a stand-in batch function (the real embedding models: tests/engine/test_embedding_batching.py)."""

import asyncio
import threading

import pytest

from deployments.backends.base import EngineThread
from deployments.backends.microbatch import MicroBatcher


class Engine:
    """Records each batch; `hold` keeps the engine thread busy until released."""

    def __init__(self):
        self.batches: list[list] = []
        self.hold = threading.Event()
        self.hold.set()
        self.busy = threading.Event()

    def run(self, payloads):
        self.busy.set()
        self.hold.wait()
        self.batches.append(list(payloads))
        return [ValueError(f"bad {p}") if p == "bad" else p.upper() for p in payloads]


def _batcher(engine: Engine, window_s: float = 0, max_size: int = 100) -> MicroBatcher:
    return MicroBatcher(EngineThread("test"), engine.run, window_s, max_size)


def test_calls_made_together_share_one_batch_and_errors_stay_per_call():
    engine = Engine()
    batcher = _batcher(engine)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(p) for p in ("a", "bad", "c")), return_exceptions=True)

    a, bad, c = asyncio.run(scenario())
    assert (a, c) == ("A", "C") and isinstance(bad, ValueError)
    assert engine.batches == [["a", "bad", "c"]] and batcher.batches == 1 and batcher.calls == 3


def test_calls_arriving_while_the_engine_is_busy_form_the_next_batch_and_cancelled_ones_leave():
    engine = Engine()
    batcher = _batcher(engine)

    async def scenario():
        engine.hold.clear()
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.to_thread(engine.busy.wait)  # "a" is in the engine, which is held
        later = [asyncio.ensure_future(batcher.submit(p)) for p in ("b", "x", "c")]
        await asyncio.sleep(0)
        assert batcher.waiting == 3
        later[1].cancel()
        await asyncio.sleep(0)
        assert batcher.waiting == 2
        engine.hold.set()
        return await first, await later[0], await later[2]

    assert asyncio.run(scenario()) == ("A", "B", "C")
    assert engine.batches == [["a"], ["b", "c"]]


def test_a_call_waits_the_window_and_a_full_batch_goes_at_once():
    engine = Engine()
    batcher = _batcher(engine, window_s=600, max_size=2)  # a window no test would sit out

    async def scenario():
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0.05)
        assert not first.done() and engine.batches == []  # waiting for company
        return await asyncio.gather(first, batcher.submit("b"))  # the second fills the batch: it goes

    assert asyncio.run(scenario()) == ["A", "B"]
    assert engine.batches == [["a", "b"]]


def test_max_size_splits_batches_by_inputs_in_arrival_order():
    engine = Engine()
    batcher = MicroBatcher(EngineThread("test"), engine.run, 0, 4, size=len)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(p) for p in ("ab", "cd", "e", "fghij", "k")))

    assert asyncio.run(scenario()) == ["AB", "CD", "E", "FGHIJ", "K"]
    assert engine.batches == [["ab", "cd"], ["e"], ["fghij"], ["k"]]  # a call larger than max goes alone


def test_an_engine_failure_fails_every_call_of_the_batch():
    def broken(payloads):
        raise RuntimeError("engine died")

    batcher = MicroBatcher(EngineThread("test"), broken, 0, 10)

    async def scenario():
        return await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_batcher_serves_callers_on_successive_event_loops():
    engine = Engine()
    batcher = _batcher(engine, window_s=0.001)
    for payload in ("a", "b"):
        assert asyncio.run(batcher.submit(payload)) == payload.upper()
    with pytest.raises(ValueError):
        asyncio.run(batcher.submit("bad"))
