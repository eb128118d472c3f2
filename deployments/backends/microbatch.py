"""Micro-batching: concurrent calls of one replica gathered into one blocking call on its engine thread.

A call waits at most `window_s` after it arrives for others to join (longer only while the
engine is busy with the previous batch, when the next one forms anyway), then every pending
call, up to `max_size` inputs, goes to the engine as one batch; the engine answers each call
separately (a call's error is that call's only). A call cancelled before its batch starts
leaves the queue; one cancelled later has its answer dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Generic, Optional, TypeVar, Union

from deployments.backends.base import EngineThread

P = TypeVar("P")  # what one call brings (e.g. its texts)
R = TypeVar("R")  # what one call gets back

RunBatch = Callable[[list[P]], list[Union[R, BaseException]]]


class MicroBatcher(Generic[P, R]):
    def __init__(self, engine: EngineThread, run: RunBatch, window_s: float, max_size: int,
                 size: Callable[[P], int] = lambda payload: 1):
        self.engine = engine
        self.run = run
        self.window_s = window_s
        self.max_size = max_size
        self.size = size
        self._pending: deque[tuple[P, asyncio.Future, float]] = deque()
        self._pending_size = 0
        self._full: Optional[asyncio.Event] = None  # made by each worker on its own event loop
        self._worker: Optional[asyncio.Task] = None
        self.batches = 0  # engine calls made
        self.calls = 0  # calls answered through them

    @property
    def waiting(self) -> int:
        """Calls gathered but not yet handed to the engine."""
        return len(self._pending)

    async def submit(self, payload: P) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((payload, future, time.monotonic()))
        self._pending_size += self.size(payload)
        if self._pending_size >= self.max_size and self._full is not None:
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        try:
            return await future
        except asyncio.CancelledError:
            self._forget(future)
            raise

    def _forget(self, future: asyncio.Future) -> None:
        for entry in self._pending:
            if entry[1] is future:
                self._pending.remove(entry)
                self._pending_size -= self.size(entry[0])
                return

    def _take(self) -> list[tuple[P, asyncio.Future, float]]:
        """The oldest pending calls up to `max_size` inputs (always at least one)."""
        batch, size = [], 0
        while self._pending:
            payload, future, arrived = self._pending[0]
            if batch and size + self.size(payload) > self.max_size:
                break
            self._pending.popleft()
            self._pending_size -= self.size(payload)
            size += self.size(payload)
            if not future.done():  # cancelled meanwhile: skip
                batch.append((payload, future, arrived))
        if self._pending_size < self.max_size:
            self._full.clear()
        return batch

    async def _drain(self) -> None:
        self._full = asyncio.Event()
        while self._pending:
            wait = self._pending[0][2] + self.window_s - time.monotonic()
            if wait > 0 and self._pending_size < self.max_size:
                try:
                    await asyncio.wait_for(self._full.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[P, asyncio.Future, float]]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            results = await asyncio.wrap_future(self.engine.submit(self.run, [payload for payload, _, _ in batch]))
        except BaseException as error:  # the engine failed as a whole, or stopped (unload)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else asyncio.CancelledError())
            if not isinstance(error, Exception):
                raise
            return
        for (_, future, _), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
