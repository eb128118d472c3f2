"""OpenAI's `n`: the choices' streams interleave by index, and the admission is charged the
prompt once and every choice's completion (serve_app/choices.py)."""

import asyncio
from types import SimpleNamespace

import pytest

from core.types import GenerationChunk, Usage
from serve_app.choices import Choices
from serve_app.generation import Generation, _Replay
from serve_app.pipeline import Outcome


class _Stream(_Replay):
    """A model's stream that yields to the event loop between chunks, as a real one does."""

    async def __anext__(self):
        await asyncio.sleep(0)
        return await super().__anext__()


class _Admission:
    def __init__(self):
        self.context = SimpleNamespace(outcome=Outcome())
        self.charges = []

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.charges.append((prompt_tokens, completion_tokens))


def _generation(words: list[str], prompt_tokens: int = 10, fail: bool = False) -> Generation:
    chunks = [GenerationChunk(text=w) for w in words[1:]]
    chunks.append(GenerationChunk(finish_reason="length", usage=Usage(prompt_tokens, len(words))))
    stream = _Stream(chunks)
    if fail:
        async def broken():
            raise RuntimeError("the model failed")
        stream.__anext__ = broken
    entry = SimpleNamespace(name="m")
    return Generation(entry, GenerationChunk(text=words[0]), stream, 0.0)


def test_streams_interleave_by_index_and_the_prompt_is_charged_once():
    admission = _Admission()
    choices = Choices([_generation(["a", "b", "c"]), _generation(["x", "y"])], admission)

    async def read():
        return [item async for item in choices.chunks()]

    items = asyncio.run(read())
    texts = {i: "".join(c.text for j, c in items if j == i) for i in (0, 1)}
    assert texts == {0: "abc", 1: "xy"}
    assert [i for i, _ in items[:2]] == [0, 1]  # the first chunks of both before the rest
    assert choices.usage.prompt_tokens == 10 and choices.usage.completion_tokens == 5
    assert admission.charges[-1] == (10, 5)


def test_collect_returns_every_choice_in_order():
    choices = Choices([_generation(["a", "b"]), _generation(["x"])], _Admission())
    results = asyncio.run(choices.collect())
    assert [r.text for r in results] == ["ab", "x"] and [r.finish_reason for r in results] == ["length"] * 2


def test_one_choice_failing_ends_the_stream_with_its_error():
    choices = Choices([_generation(["a", "b", "c", "d"]), _generation(["x", "y"], fail=True)], _Admission())

    async def read():
        return [item async for item in choices.chunks()]

    with pytest.raises(RuntimeError, match="the model failed"):
        asyncio.run(read())


def test_a_single_choice_is_its_generation():
    admission = _Admission()
    generation = _generation(["a"])
    choices = Choices([generation], admission)
    assert choices.usage is generation.usage and generation.admission is None  # start() sets it for n=1
