"""Coalesce a token stream into fewer, larger chunks.

Each chunk that leaves a replica costs a Ray message, an ingress wake-up and an HTTP
write, all competing with the engine for the same cores. The first chunk goes out at
once (time to first token is untouched); later text is gathered for up to
`interval_s` and sent together, as Ray Serve LLM and vLLM do with a stream interval.

`interval_s` may be a callable, read at the start of each window: the replica lengthens the
interval while many streams run (`load_scaled_interval`), since then every token would
otherwise be its own message and the messaging would take CPU from the batched decode.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable, Union

from core.types import GenerationChunk

STREAMS_PER_INTERVAL = 4  # up to this many concurrent streams keep the configured interval
MAX_INTERVAL_FACTOR = 8


def load_scaled_interval(base_s: float, streams: Callable[[], int]) -> Callable[[], float]:
    """`base_s` while few streams run; `base_s` x streams / 4 (at most 8 x) under load."""
    def interval() -> float:
        return base_s * min(MAX_INTERVAL_FACTOR, max(1.0, streams() / STREAMS_PER_INTERVAL))
    return interval


async def coalesce(chunks: AsyncIterator[GenerationChunk],
                   interval_s: Union[float, Callable[[], float]]) -> AsyncIterator[GenerationChunk]:
    window = interval_s if callable(interval_s) else (lambda: interval_s)
    if window() <= 0:
        async for chunk in chunks:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    source = chunks.__aiter__()
    pending: list[str] = []
    logprobs: list = []  # of the pending text's tokens
    deadline = None
    fetch = None
    sent_first = False
    try:
        while True:
            fetch = fetch or asyncio.ensure_future(source.__anext__())
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({fetch}, timeout=timeout)
            if not done:  # the interval is over: send what has gathered
                yield GenerationChunk(text="".join(pending), logprobs=tuple(logprobs))
                pending, logprobs, deadline = [], [], None
                continue
            task, fetch = fetch, None
            try:
                chunk = task.result()
            except StopAsyncIteration:
                break
            if chunk.finish_reason is not None or not sent_first:
                if pending:
                    yield GenerationChunk(text="".join(pending), logprobs=tuple(logprobs))
                    pending, logprobs, deadline = [], [], None
                sent_first = True
                yield chunk
                continue
            pending.append(chunk.text)
            logprobs.extend(chunk.logprobs)
            deadline = deadline or loop.time() + window()
        if pending:
            yield GenerationChunk(text="".join(pending), logprobs=tuple(logprobs))
    finally:
        if fetch is not None:
            # The source runs inside that task until the cancellation lands there: wait for it, so
            # that the source's cleanup (the engine takes a waiting request out of its queue) is done
            # when this returns, and closing it below does not meet a generator still running.
            fetch.cancel()
            await asyncio.wait({fetch})
            if not fetch.cancelled():
                fetch.exception()  # retrieved: a chunk or an error nobody will read
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
