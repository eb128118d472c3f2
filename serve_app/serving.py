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
from deployments.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    PromptTooLong,
)
from deployments.types import (
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    Usage,
)
from serve_app.settings import Settings


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: ModelConfig
    handle: Any  # ray.serve.handle.DeploymentHandle


class ModelRouter:
    def __init__(
        self, entries: dict[str, ModelEntry], default_model: Optional[str], default_embedding_model: Optional[str]
    ):
        self.entries = entries
        self.default_model = default_model
        self.default_embedding_model = default_embedding_model

    def resolve(self, name: Optional[str], task: Optional[str] = None) -> ModelEntry:
        """The model `name` (or the default for `task`); a model of another task is a 400."""
        if not name:
            name = self.default_embedding_model if task == "embed" else self.default_model
            if name is None:
                raise InvalidRequest(f"no {'embedding' if task == 'embed' else 'generation'} model is configured",
                                     param="model")
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} does not exist", param="model")
        if task is not None and entry.config.task != task:
            if task == "embed":
                raise InvalidRequest(f"model {name!r} does not produce embeddings", param="model")
            raise InvalidRequest(
                f"model {name!r} is an embedding model: use /v1/embeddings or /api/v1/embeddings", param="model"
            )
        return entry

    def resolve_adapter(self, name: Optional[str], task: Optional[str]) -> tuple[ModelEntry, Optional[str]]:
        """`<model>` or `<model>:<adapter>` (an adapter listed in the model's entry)."""
        base, colon, adapter = (name or "").partition(":")
        entry = self.resolve(base or None, task)
        if colon and adapter not in entry.config.adapters:
            raise ModelNotFound(f"model {name!r} does not exist", param="model")
        return entry, adapter or None

    def model_ids(self) -> list[str]:
        """Every id a request may name: each model, then each of its adapters as `<model>:<adapter>`."""
        ids = []
        for name, entry in self.entries.items():
            ids += [name] + [f"{name}:{adapter}" for adapter in entry.config.adapters]
        return ids


class Generation:
    """A started generation: the first chunk is in hand, the rest streams."""

    def __init__(self, entry: ModelEntry, first: Optional[GenerationChunk], rest: Any, started: float,
                 adapter: Optional[str] = None):
        self.entry = entry
        self.model_id = f"{entry.name}:{adapter}" if adapter else entry.name  # echoed in responses
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
        entry, adapter = self.router.resolve_adapter(model, "generate")
        request = GenerationRequest(
            adapter=adapter,
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
        return Generation(entry, first, stream, started, adapter)


MAX_EMBEDDING_INPUTS = 2048  # as OpenAI


class EmbeddingService:
    def __init__(self, router: ModelRouter, settings: Settings):
        self.router = router
        self.settings = settings

    def _check(self, texts: list[str]) -> None:
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequest(f"input has {len(texts)} items; the limit is {MAX_EMBEDDING_INPUTS}", param="input")
        for index, text in enumerate(texts):
            if not text:
                raise InvalidRequest(f"input[{index}] is empty", param="input")
            if len(text) > self.settings.max_prompt_length:
                raise PromptTooLong(
                    f"input[{index}] is {len(text)} characters; the limit is {self.settings.max_prompt_length}",
                    param="input",
                )

    async def embed(self, model: Optional[str], request_id: str, texts: list[str]) -> tuple[ModelEntry, EmbeddingResult]:
        entry = self.router.resolve(model, "embed")
        self._check(texts)
        try:
            result = await asyncio.wait_for(
                entry.handle.embed.remote(request_id, texts), self.settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            raise ModelUnavailable(
                f"model {entry.name!r} did not answer within {self.settings.request_timeout_s:g}s"
            ) from None
        return entry, result
