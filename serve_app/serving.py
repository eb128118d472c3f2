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
from serve_app.access_errors import TooManyMessages
from serve_app.content_filter import ContentPolicy
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
        self.screen = None  # optional output check (content policy), called with each piece of text
        self.output_text: Optional[str] = None  # kept when the log wants it
        self.prompt_text: Optional[str] = None

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        try:
            chunk = self._first
            while chunk is not None:
                if chunk.finish_reason:
                    self.finish_reason, self.usage = chunk.finish_reason, chunk.usage or self.usage
                if self.screen is not None:
                    self.screen(chunk.text)
                if self.output_text is not None:
                    self.output_text += chunk.text
                yield chunk
                chunk = await _next(self._rest)
            self._done = True
        finally:
            if not self._done:  # the client went away: stop the model's work
                self._rest.cancel()

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
        self.policy = ContentPolicy.from_settings(settings)

    def _check(self, entry: ModelEntry, request: GenerationRequest) -> None:
        if request.prompt is not None:
            size, param = len(request.prompt), "prompt"
        else:
            if len(request.messages or ()) > self.settings.max_messages:
                raise TooManyMessages(
                    f"{len(request.messages)} messages; the limit is {self.settings.max_messages}", param="messages"
                )
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
        texts = [request.prompt] if request.prompt is not None else [m["content"] for m in request.messages or ()]
        self.policy.check_prompt(texts, param)

    async def start(
        self,
        model: Optional[str],
        request_id: str,
        sampling: SamplingParams,
        *,
        prompt: Optional[str] = None,
        messages: Optional[list[dict]] = None,
        key_id: Optional[str] = None,
        principal: Any = None,  # serve_app.auth.Principal: default model, allowed models
    ) -> Generation:
        entry = self.router.resolve(model or getattr(principal, "default_model", None))
        if principal is not None:
            principal.check_model(entry.name)
            key_id = key_id or principal.key_id
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
        generation = Generation(entry, first, stream, started)
        generation.screen = self.policy.output_screen()
        if self.settings.log_prompts:
            generation.output_text = ""
            generation.prompt_text = prompt if prompt is not None else "\n".join(
                f"{m['role']}: {m['content']}" for m in messages or ()
            )
        return generation
