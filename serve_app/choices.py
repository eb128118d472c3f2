"""The answers of one request (OpenAI's `n`): one generation per choice, started together,
streamed interleaved, and charged to the request's admission as one request (the prompt once,
every choice's completion)."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Optional

from core.types import GenerationChunk, GenerationResult, Usage
from serve_app.generation import Generation
from serve_app.pipeline import Admission

_END = object()


class _ChoiceCharge:
    """Stands for the admission in one choice's generation: its charge is added to the others'."""

    def __init__(self, choices: "Choices", index: int):
        self.choices, self.index = choices, index

    @property
    def context(self):
        return self.choices.admission.context

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        charged = self.choices.charged
        charged[self.index] = (prompt_tokens, completion_tokens)
        # every choice read the same prompt: counted once, as OpenAI's usage does
        self.choices.admission.charge(max(p for p, _ in charged.values()), sum(c for _, c in charged.values()))


class Choices:
    def __init__(self, generations: list[Generation], admission: Optional[Admission] = None):
        self.generations = generations
        self.admission = admission
        self.charged: dict[int, tuple[int, int]] = {}
        if admission is not None and len(generations) > 1:
            for index, generation in enumerate(generations):
                generation.admission = _ChoiceCharge(self, index)

    def __len__(self) -> int:
        return len(self.generations)

    @property
    def model_id(self) -> str:
        return self.generations[0].model_id

    @property
    def cache(self) -> Optional[str]:
        return self.generations[0].cache if len(self.generations) == 1 else None

    @property
    def usage(self) -> Usage:
        if len(self.generations) == 1:
            return self.generations[0].usage
        return Usage(prompt_tokens=max(g.usage.prompt_tokens for g in self.generations),
                     completion_tokens=sum(g.usage.completion_tokens for g in self.generations))

    async def collect(self) -> list[GenerationResult]:
        collecting = [asyncio.ensure_future(g.collect()) for g in self.generations]
        try:
            return list(await asyncio.gather(*collecting))
        finally:  # one failed or the client left: the others stop too
            for task in collecting:
                task.cancel()
            await asyncio.gather(*collecting, return_exceptions=True)

    async def chunks(self) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """(choice index, chunk) as they come; one choice's error ends the whole stream."""
        if len(self.generations) == 1:
            async for chunk in self.generations[0].chunks():
                yield 0, chunk
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, generation: Generation) -> None:
            try:
                async for chunk in generation.chunks():
                    queue.put_nowait((index, chunk))
            except Exception as error:
                queue.put_nowait((index, error))
            finally:
                queue.put_nowait((index, _END))

        pumps = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(self.generations)]
        try:
            running = len(pumps)
            while running:
                index, item = await queue.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield index, item
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
