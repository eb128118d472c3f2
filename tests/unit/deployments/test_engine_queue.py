"""Requests queued for a blocking engine: counted while they wait, uncounted once they run or leave.

The engine here is a stand-in that blocks until released (queue accounting only; the
integration tests prove the real backends).
"""

import asyncio
import threading
from contextlib import suppress
from pathlib import Path

import pytest

from core.types import GenerationChunk, GenerationRequest, SamplingParams
from deployments.backends.base import EngineThread, ThreadedBackend
from deployments.config import parse_models

CONFIG = parse_models({"models": {"m": {"type": "gguf", "path": "x.gguf"}}}).models["m"]


class HeldEngine(ThreadedBackend):
    """Each generation waits for `release`, then yields one final chunk."""

    def __init__(self):
        super().__init__("m", CONFIG, Path("x.gguf"))
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def load(self) -> None:
        pass

    def generate_blocking(self, request, cancel):
        self.runs += 1
        self.started.set()
        self.release.wait()
        yield GenerationChunk(text="done", finish_reason="stop")


@pytest.fixture
def held():
    """Released and unloaded at the end even when an assertion fails, so a failure never hangs."""
    backend = HeldEngine()
    yield backend
    backend.release.set()
    backend.unload()


@pytest.fixture
def gate():
    started, release = threading.Event(), threading.Event()
    yield started, release
    release.set()


def _request() -> GenerationRequest:
    return GenerationRequest(request_id="r", sampling=SamplingParams(), prompt="hi")


def test_engine_thread_counts_jobs_until_they_start_or_are_cancelled(gate):
    engine = EngineThread("test")
    started, release = gate
    running = engine.submit(lambda: (started.set(), release.wait()))
    started.wait()
    assert engine.waiting == 0  # the running job no longer waits
    second, third = engine.submit(lambda: "second"), engine.submit(lambda: "third")
    assert engine.waiting == 2
    assert third.cancel() and engine.waiting == 1
    release.set()
    assert second.result() == "second" and running.done()
    assert engine.waiting == 0
    engine.shutdown()


def test_engine_thread_shutdown_drops_the_waiting_jobs(gate):
    engine = EngineThread("test")
    started, release = gate
    engine.submit(lambda: (started.set(), release.wait()))
    started.wait()
    waiting = engine.submit(lambda: "never")
    assert engine.waiting == 1
    engine.shutdown()
    assert waiting.cancelled() and engine.waiting == 0


def test_threaded_backend_reports_a_second_request_as_queued_until_its_client_leaves(held):
    backend = held

    async def main():
        first, second = backend.stream(_request()), backend.stream(_request())
        first_chunk = asyncio.create_task(anext(first))
        await asyncio.to_thread(backend.started.wait)  # the engine thread runs the first request
        assert backend.queued == 0
        second_chunk = asyncio.create_task(anext(second))
        await asyncio.sleep(0)  # the second request reaches the engine's queue
        assert backend.queued == 1
        second_chunk.cancel()  # its client went away: it leaves the queue without running
        with suppress(asyncio.CancelledError):
            await second_chunk
        assert backend.queued == 0
        backend.release.set()
        assert (await first_chunk).text == "done"
        await first.aclose()

    asyncio.run(main())
    assert backend.runs == 1


def test_threaded_backend_runs_queued_requests_in_turn(held):
    backend = held

    async def main():
        streams = [backend.stream(_request()) for _ in range(3)]
        chunks = [asyncio.create_task(anext(s)) for s in streams]
        await asyncio.to_thread(backend.started.wait)
        await asyncio.sleep(0)
        assert backend.queued == 2
        backend.release.set()
        assert [(await c).text for c in chunks] == ["done"] * 3
        for s in streams:
            await s.aclose()

    asyncio.run(main())
    assert backend.queued == 0 and backend.runs == 3
