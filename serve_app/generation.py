"""A started generation: the first chunk in hand, the rest streaming; its result, callbacks
(cache fill, session save) and its admission's charge when the stream ends."""

from __future__ import annotations

import dataclasses
import time
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from core.token_bounds import text_token_bound
from core.types import GenerationChunk, GenerationResult, Usage
from serve_app.model_router import ModelEntry
from serve_app.pipeline import Admission

OnComplete = Callable[[GenerationResult], Awaitable[None]]
OnClose = Callable[[], Awaitable[None]]  # runs when the stream ends, completed or not (a session's lease)


class _Replay:
    """The rest of a stream that is already known (a cache hit)."""

    def __init__(self, chunks: list[GenerationChunk]):
        self._chunks = list(chunks)

    async def __anext__(self) -> GenerationChunk:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    def cancel(self) -> None:
        self._chunks.clear()


class Generation:
    """A started generation: the first chunk is in hand, the rest streams.

    When the stream completes, `on_complete` callbacks get the whole result (cache
    fill, session update); a stream the client abandoned completes nothing. `on_close`
    callbacks run after those, however the stream ended.
    """

    def __init__(self, entry: ModelEntry, first: Optional[GenerationChunk], rest: Any, started: float,
                 on_complete: tuple[OnComplete, ...] = (), cache: Optional[str] = None,
                 adapter: Optional[str] = None, on_close: tuple[OnClose, ...] = ()):
        self.admission: Optional[Admission] = None  # charged with the tokens when the stream ends
        self.prompt_estimate = 0  # charged for the prompt when the client leaves before the usage arrives
        self.entry = entry
        self.model_id = f"{entry.name}:{adapter}" if adapter else entry.name  # echoed in responses
        self._first = first
        self._rest = rest
        self.started = started
        self.first_token_s: Optional[float] = time.monotonic() - started if first else None
        self.usage = Usage()
        self.finish_reason: Optional[str] = None
        self.cache = cache  # "hit", "miss" or None (not cacheable)
        self._on_complete = on_complete
        self._on_close = on_close
        self._done = first is None
        self.screen = None  # optional OutputScreen (content policy): holds text back until judged
        self.output_text: Optional[str] = None  # kept when the log wants it
        self.prompt_text: Optional[str] = None
        self.log_chars = 0
        self.tools = None  # the request's ToolUse, made for this model (its answer format)

    def tool_answer(self, whole: Optional[str] = None):
        """A reader of this generation's answer (tool_calls.ToolAnswer) when the request has tools:
        the channel reads it without knowing the model's tool format. `whole`: a finished answer's
        text, read at once."""
        if self.tools is None:
            return None
        answer = self.tools.answer()
        if whole is not None:
            answer.feed(whole)
            answer.finish()
        return answer

    @classmethod
    def replay(cls, entry: ModelEntry, result: GenerationResult, adapter: Optional[str] = None) -> "Generation":
        final = GenerationChunk(finish_reason=result.finish_reason, usage=result.usage)
        first = GenerationChunk(text=result.text) if result.text else final
        rest = _Replay([final] if result.text else [])
        return cls(entry, first, rest, time.monotonic(), cache="hit", adapter=adapter)

    def cancel(self) -> None:
        """Stop the model's work on a generation that will not be read."""
        self._rest.cancel()

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        try:
            async with aclosing(self._chunks()) as chunks:  # closed at once: the model's stream is cancelled
                async for chunk in chunks:
                    yield chunk
        finally:
            for close in self._on_close:
                await close()

    async def _chunks(self) -> AsyncIterator[GenerationChunk]:
        parts: list[str] = []
        try:
            chunk = self._first
            while chunk is not None:
                if chunk.finish_reason:
                    self.finish_reason, self.usage = chunk.finish_reason, chunk.usage or self.usage
                parts.append(chunk.text)
                if self.output_text is not None:
                    self.output_text += chunk.text
                if self.screen is not None:  # only text already judged goes out
                    released = self.screen.feed(chunk.text) + (self.screen.finish() if chunk.finish_reason else "")
                    chunk = dataclasses.replace(chunk, text=released)
                yield chunk
                chunk = await next_chunk(self._rest)
            if self.screen is not None and (rest := self.screen.finish()):  # a stream without a final chunk
                yield GenerationChunk(text=rest)
            self._done = True
        finally:
            if not self._done:  # the client went away: stop the model's work
                self._rest.cancel()
            self._report("".join(parts))
        result = GenerationResult("".join(parts), self.finish_reason or "length", self.usage, self.first_token_s)
        for callback in self._on_complete:
            await callback(result)

    def _report(self, text: str) -> None:
        """Charge the admission (what the model counted, or an estimate of what a client that left
        received) and hand the figures to the request's outcome (access log, metrics)."""
        if self.admission is None:
            return
        if self._done or self.usage.total_tokens:
            self.admission.charge(self.usage.prompt_tokens, self.usage.completion_tokens)
        else:
            self.admission.charge(self.prompt_estimate, text_token_bound(text))
        outcome = self.admission.context.outcome
        outcome.model, outcome.cache = self.model_id, self.cache
        outcome.first_token_s, outcome.tokens_per_s = self.first_token_s, self.decode_speed()
        if self.prompt_text is not None:  # LOG_PROMPTS: truncated copies for the access log
            outcome.log_prompt = self.prompt_text[:self.log_chars]
            outcome.log_response = (self.output_text or "")[:self.log_chars]

    def decode_speed(self) -> Optional[float]:
        """Completion tokens per second after the first one, once the stream has ended."""
        if not self._done or self.first_token_s is None or self.usage.completion_tokens < 2:
            return None
        decode_s = time.monotonic() - self.started - self.first_token_s
        return (self.usage.completion_tokens - 1) / decode_s if decode_s > 0 else None

    async def collect(self) -> GenerationResult:
        parts, logprobs = [], []
        async for chunk in self.chunks():
            parts.append(chunk.text)
            logprobs.extend(chunk.logprobs)
        return GenerationResult("".join(parts), self.finish_reason or "length", self.usage, self.first_token_s,
                                tuple(logprobs))


async def next_chunk(stream: Any) -> Optional[GenerationChunk]:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
