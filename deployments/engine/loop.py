"""What every batching engine shares: its one engine thread running steps, the waiting room it
admits from, the step record, and the consumer side of a request's stream.

An engine subclasses `StepLoop`, implements `_step_once` (one step; False when there was nothing
to do) and `_fail_running`, and calls `_start_loop` once it is ready to run steps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Callable, Optional

from core.errors import BackendFailure, ModelUnavailable
from core.types import GenerationChunk
from deployments.engine.admission import WaitingRoom
from deployments.engine.sequence import Sequence
from deployments.engine.steps import StepLog

logger = logging.getLogger("aicore.engine")


class StepLoop(ABC):
    parallel: int

    def _start_loop(self, model_name: str, room: WaitingRoom, keep_steps: int) -> None:
        self.model_name, self.room = model_name, room
        self.log = StepLog(keep_steps)
        self._step = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._touched: list[Sequence] = []  # sequences with items to post after this step
        self.failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"engine-{model_name}", daemon=True)
        self._thread.start()

    @property
    @abstractmethod
    def busy_slots(self) -> int:
        """Sequences running now."""

    def _free_slots(self) -> int:
        return self.parallel - self.busy_slots

    @abstractmethod
    def _step_once(self) -> bool:
        """One step; False when there was nothing to run."""

    @abstractmethod
    def _fail_running(self, error: BaseException) -> None:
        """End every running sequence with `error` (and free what it holds)."""

    def _left_waiting(self) -> list[Sequence]:
        """Requests not started when the engine stops."""
        with self.room.lock:
            return [sequence for sequence, _ in self.room.take(len(self.room) + self.parallel + 1)]

    # ---- called from the replica's event loop ----

    def submit(self, sequence: Sequence) -> None:
        """Queue a request, or raise `Overloaded` at once."""
        if self.failure is not None:
            raise BackendFailure("the model's engine stopped; the replica is being replaced")
        with self.room.lock:
            self.room.admit(sequence, sequence.priority, self._free_slots(), sequence.tenant)
        self._wake.set()

    def cancel(self, sequence: Sequence) -> None:
        """The client left: a waiting request leaves the queue now, a running one at the next step."""
        sequence.cancelled = True
        with self.room.lock:
            self.room.remove(sequence)
        self._wake.set()

    def report(self) -> dict:
        """Slots, queue and counters, as a replica publishes them (metrics read these)."""
        with self.room.lock:
            waiting = self.room.lengths()
            refused = dict(self.room.refused)
        return {"parallel": self.parallel, "slots_busy": self.busy_slots, "waiting": waiting,
                "refused": refused, "service_s": self.room.service.seconds, **self.log.snapshot()}

    def _stop_loop(self) -> bool:
        """Stop the engine thread; False if a step is still running after 30 s."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        return not self._thread.is_alive()

    # ---- the engine thread ----

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self._step_once()
            except BaseException as error:  # a bug or an engine failure: fail what runs, keep serving
                logger.exception("engine step failed", extra={"model": self.model_name})
                self._fail_running(BackendFailure("the model failed to generate a response"))
                worked = False
                if not isinstance(error, Exception):
                    self.failure = error
                    self._post()
                    return
            self._post()
            if not worked:
                self._wake.wait(0.5)
                self._wake.clear()
        gone = ModelUnavailable(f"model {self.model_name!r} is shutting down; retry")
        for sequence in self._left_waiting():
            sequence.fail(gone)
            self._touched.append(sequence)
        self._fail_running(gone)
        self._post()

    def _post(self) -> None:
        """Hand this step's items to their consumers: one call_soon_threadsafe per event loop."""
        post_outboxes(self._touched)
        self._touched = []


async def stream_sequence(engine: StepLoop, sequence: Sequence, queue: asyncio.Queue,
                          note_cancelled: Callable[[int], None]) -> AsyncIterator[GenerationChunk]:
    """Submit `sequence` (its outlet puts into `queue`) and yield its chunks; a consumer that stops
    early (client gone) cancels it."""
    engine.submit(sequence)
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not sequence.finished:
            note_cancelled(sequence.produced)
            engine.cancel(sequence)


def post_outboxes(touched: list[Sequence]) -> None:
    """Hand a step's items to their consumers: one call_soon_threadsafe per event loop."""
    by_loop: dict[Any, list] = {}
    for sequence in touched:
        if sequence.outbox:
            by_loop.setdefault(sequence.outlet.loop, []).append((sequence.outlet.put, sequence.outbox))
            sequence.outbox = []
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, items)
        except RuntimeError:  # that event loop is closed: its consumers are gone
            pass


def _deliver(items: list) -> None:
    """On the consumer's event loop: every item of one step, in order, to its stream."""
    for put, outbox in items:
        for item in outbox:
            put(item)
