"""Prefix reuse: time to first token of a session's 10th turn with and without it, alone and beside
15 other streams (the GGUF backend in this process, the packaged SmolLM2, 16 slots).

    .venv/bin/python -m scripts.bench_prefix

With reuse the 10th turn goes to the slot that holds turns 1-9 and prefills only the new
message; without (`prefix_reuse: false`) it prefills the whole conversation.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from core.types import GenerationRequest, SamplingParams

TURNS = 10
REPEATS = 3


def _load(reuse: bool):
    from tests.engine.conftest import load_smollm2

    return load_smollm2(Path(tempfile.mkdtemp()), parallel=16, context_length=2048, prefix_reuse=reuse)


async def _answer(backend, rid: str, messages: list, max_tokens: int = 24, **extra) -> tuple[str, float]:
    request = GenerationRequest(request_id=rid, messages=tuple(messages),
                                sampling=SamplingParams(max_tokens=max_tokens, temperature=0, **extra))
    started, first, text = time.perf_counter(), None, ""
    async for chunk in backend.stream(request):
        if first is None and (chunk.text or chunk.finish_reason):
            first = time.perf_counter() - started
        text += chunk.text
    return text, first or 0.0


async def _tenth_turn_ttft(backend, session: int, busy: bool) -> float:
    """Play turns 1-9 of a session, then time the 10th (optionally while 15 others stream)."""
    messages = [{"role": "system", "content": "You are a helpful assistant for a small shop's customers."}]
    for turn in range(1, TURNS):
        messages.append({"role": "user", "content": f"Session {session}, question {turn}: what do you sell?"})
        answer, _ = await _answer(backend, f"s{session}-t{turn}", messages)
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": f"Session {session}, last question: when do you open?"})
    others = []
    if busy:
        others = [asyncio.ensure_future(_answer(backend, f"bg-{session}-{i}",
                                                [{"role": "user", "content": f"Tell story {i}."}],
                                                max_tokens=200, ignore_eos=True)) for i in range(15)]
        await asyncio.sleep(1.0)  # the other streams are decoding
    _, ttft = await _answer(backend, f"s{session}-t{TURNS}", messages)
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    return ttft


def main() -> None:
    rows = {}
    for reuse in (True, False):
        backend = _load(reuse)
        try:
            for busy in (False, True):
                runs = [asyncio.run(_tenth_turn_ttft(backend, 100 * busy + i, busy)) for i in range(REPEATS)]
                rows[(reuse, busy)] = statistics.median(runs)
            reused = backend.engine.log.stats.prefix_reused_tokens
        finally:
            backend.unload()
        print(f"prefix reuse {'on' if reuse else 'off'}: {reused} prompt tokens reused in all")
    print(f"| 10th turn of a session, TTFT (median of {REPEATS}) | reuse on | reuse off | ratio |")
    print("|---|---|---|---|")
    for busy, label in ((False, "alone"), (True, "beside 15 other streams")):
        on, off = rows[(True, busy)], rows[(False, busy)]
        print(f"| {label} | {on * 1000:.0f} ms | {off * 1000:.0f} ms | {on / off:.2f} |")


if __name__ == "__main__":
    main()
