"""Serving logic shared by both API families: no HTTP here.

Resolve the model, check limits, call the model's handle, and hand back either the
whole result or a stream whose first chunk has already arrived (so that an error
before the first token can still become a proper HTTP error, not a broken stream).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from deployments.config import ModelConfig
from deployments.errors import ContextLengthExceeded, ModelNotFound, ModelUnavailable, PromptTooLong
from deployments.types import GenerationChunk, GenerationRequest, GenerationResult, SamplingParams, Usage
from serve_app.settings import Settings


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: ModelConfig
    handle: Any  # ray.serve.handle.DeploymentHandle


class ModelRouter:
    def __init__(self, entries: dict[str, ModelEntry], default_model: str):
        self.entries = entries
        self.default_model = default_model

    def resolve(self, name: Optional[str]) -> ModelEntry:
        name = name or self.default_model
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} does not exist", param="model")
        return entry


class Generation:
    """A started generation: the first chunk is in hand, the rest streams."""

    def __init__(self, entry: ModelEntry, first: Optional[GenerationChunk], rest: Any, started: float):
        self.entry = entry
        self._first = first
        self._rest = rest
        self.started = started
        self.first_token_s: Optional[float] = time.monotonic() - started if first else None
        self.usage = Usage()
        self.finish_reason: Optional[str] = None
        self._done = first is None

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        try:
            chunk = self._first
            while chunk is not None:
                if chunk.finish_reason:
                    self.finish_reason, self.usage = chunk.finish_reason, chunk.usage or self.usage
                yield chunk
                chunk = await _next(self._rest)
            self._done = True
        finally:
            if not self._done:  # the client went away: stop the model's work
                self._rest.cancel()

    def decode_speed(self) -> Optional[float]:
        """Completion tokens per second after the first one, once the stream has ended."""
        if not self._done or self.first_token_s is None or self.usage.completion_tokens < 2:
            return None
        decode_s = time.monotonic() - self.started - self.first_token_s
        return (self.usage.completion_tokens - 1) / decode_s if decode_s > 0 else None

    async def collect(self) -> GenerationResult:
        parts = [chunk.text async for chunk in self.chunks() if chunk.text]
        return GenerationResult("".join(parts), self.finish_reason or "length", self.usage, self.first_token_s)


async def _next(stream: Any) -> Optional[GenerationChunk]:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


class GenerationService:
    def __init__(self, router: ModelRouter, settings: Settings):
        self.router = router
        self.settings = settings

    def _check(self, entry: ModelEntry, request: GenerationRequest) -> None:
        if request.prompt is not None:
            size, param = len(request.prompt), "prompt"
        else:
            size, param = sum(len(m["content"]) for m in request.messages or ()), "messages"
        if size > self.settings.max_prompt_length:
            raise PromptTooLong(
                f"{param} is {size} characters; the limit is {self.settings.max_prompt_length}", param=param
            )
        wanted = request.sampling.max_tokens
        if wanted is not None and wanted >= entry.config.context_length:
            raise ContextLengthExceeded(
                f"max_tokens {wanted} must be below model {entry.name!r}'s context of "
                f"{entry.config.context_length} tokens",
                param="max_tokens",
            )

    async def start(
        self,
        model: Optional[str],
        request_id: str,
        sampling: SamplingParams,
        *,
        prompt: Optional[str] = None,
        messages: Optional[list[dict]] = None,
        key_id: Optional[str] = None,
    ) -> Generation:
        entry = self.router.resolve(model)
        request = GenerationRequest(
            request_id=request_id,
            sampling=sampling,
            prompt=prompt,
            messages=tuple(messages) if messages is not None else None,
            key_id=key_id,
        )
        self._check(entry, request)
        started = time.monotonic()
        stream = entry.handle.options(stream=True).stream.remote(request)
        try:
            first = await asyncio.wait_for(_next(stream), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            stream.cancel()
            raise ModelUnavailable(
                f"model {entry.name!r} did not start answering within {self.settings.request_timeout_s:g}s"
            ) from None
        except BaseException:
            stream.cancel()
            raise
        return Generation(entry, first, stream, started)
