"""The backend contract every model format implements, and the registry of backends.

A backend lives inside one model replica. The replica calls `load()` once (in a
thread, it may block), then serves many concurrent requests through the async
methods below. Async is the contract so that a batching engine can interleave many
sequences; a backend whose engine is blocking uses `ThreadedBackend`, which runs it
on a worker thread and never blocks the replica's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Callable, ClassVar, Iterator, Optional

from core.errors import InvalidRequest
from core.types import EmbeddingResult, GenerationChunk, GenerationRequest
from deployments.config import ModelConfig

logger = logging.getLogger("aicore.backend")

_BACKENDS: dict[tuple[str, str], type["Backend"]] = {}


def register_backend(name: str, task: str = "generate") -> Callable[[type["Backend"]], type["Backend"]]:
    """Class decorator: `@register_backend("gguf")` makes `type: "gguf"` load this class;
    `@register_backend("onnx", task="embed")` serves `"type": "onnx", "task": "embed"`."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.type_name = name
        _BACKENDS[(name, task)] = cls
        return cls

    return decorate


def get_backend(name: str, task: str = "generate") -> type["Backend"]:
    # Importing the package registers the built-in backends.
    import deployments.backends  # noqa: F401

    if (name, task) not in _BACKENDS:
        raise KeyError(f"no backend registered for type {name!r}, task {task!r} (known: {sorted(_BACKENDS)})")
    return _BACKENDS[(name, task)]


class Backend(ABC):
    """One loaded model.

    `stream(request)` yields `GenerationChunk`s: zero or more with text, as it is
    decoded, then exactly one final chunk with `finish_reason` ("stop" or "length")
    and `usage` (token counts from the model's own tokenizer). Closing the iterator
    early (client gone) must stop the generation. Invalid requests raise
    `core.errors.InvalidRequest` (or a subclass) before any chunk.
    """

    type_name: ClassVar[str] = ""
    supports_adapters: ClassVar[bool] = False  # True: serves the `adapters` of its models.json entry

    def __init__(self, model_name: str, config: ModelConfig, weights: Path, tokenizer: Optional[Path] = None):
        self.model_name = model_name
        self.config = config
        self.weights = weights
        self.tokenizer_path = tokenizer  # config.tokenizer resolved, when set
        self.cache_dir: Optional[Path] = None  # MODEL_CACHE_DIR, for what a backend converts at load
        self.adapter_paths: dict[str, Path] = {}  # config.adapters resolved
        self.cancelled = 0  # generations stopped because their client went away
        self.request_timeout_s = 300.0  # REQUEST_TIMEOUT_S: a queue wait past it is refused at once

    def note_cancelled(self, produced_tokens: int) -> None:
        self.cancelled += 1
        logger.info("generation cancelled", extra={"model": self.model_name, "completion_tokens": produced_tokens})

    @abstractmethod
    def load(self) -> None:
        """Load the weights (blocking; called once, off the event loop)."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Generate for one request; see the class docstring for the yield contract."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (used to trim sessions to the context). Backends with a tokenizer
        override this; the fallback is a deliberate over-estimate (about 3 characters a token)."""
        return max(1, len(text) // 3 + 1)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        """Unit-length vectors for `texts` (embedding backends only)."""
        raise InvalidRequest(f"model {self.model_name!r} does not produce embeddings", param="model")

    @property
    def queued(self) -> int:
        """Requests waiting for the engine (accepted by the replica, not yet running)."""
        return 0

    def engine_report(self) -> Optional[dict]:
        """A batching engine's slots, queue and counters (None: the backend has no such engine)."""
        return None

    def forget_conversation(self, conversation: str) -> int:
        """Drop what the backend keeps of a server-side session (its KV); how many pieces it held."""
        return 0

    def loaded_adapters(self) -> list[str]:
        """Adapters in memory now, least recently used first."""
        return []

    def health(self) -> None:
        """Raise if the backend can no longer serve (Ray then replaces the replica)."""

    def unload(self) -> None:
        """Free the weights; the replica is going away."""


class EngineThread:
    """The one worker thread of a blocking engine, counting the jobs that wait for it.

    A job counts as waiting from `submit` until the thread starts it (or it is cancelled
    before starting, or the executor shuts down with it still queued).
    """

    def __init__(self, name: str):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, fn: Callable, *args) -> Future:
        left = False

        def leave() -> None:  # once per job: started, cancelled or dropped
            nonlocal left
            with self._lock:
                if not left:
                    left = True
                    self._waiting -= 1

        def job():
            leave()
            return fn(*args)

        with self._lock:
            self._waiting += 1
        try:
            future = self._executor.submit(job)
        except BaseException:
            leave()
            raise
        future.add_done_callback(lambda _: leave())
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class ThreadedBackend(Backend):
    """Adapts a blocking engine: `generate_blocking` runs on one worker thread per replica.

    One thread because engines like llama.cpp keep one context that is not thread-safe;
    concurrent requests queue for it (counted in `queued`) while the event loop stays free.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._engine = EngineThread(f"engine-{self.model_name}")

    @property
    def queued(self) -> int:
        return self._engine.waiting

    @abstractmethod
    def generate_blocking(
        self, request: GenerationRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        """Blocking generator with the same yield contract; stop when `cancel` is set."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def run() -> None:
            try:
                if cancel.is_set():
                    return
                for chunk in self.generate_blocking(request, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if cancel.is_set():
                        break
            except BaseException as error:  # delivered to the awaiting coroutine
                loop.call_soon_threadsafe(queue.put_nowait, _Failure(error))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _End())

        job = self._engine.submit(run)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancel.set()
            job.cancel()  # a request still waiting for the thread leaves the queue now

    def unload(self) -> None:
        self._engine.shutdown()
