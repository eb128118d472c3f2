"""Coalesce a token stream into fewer, larger chunks.

Each chunk that leaves a replica costs a Ray message, an ingress wake-up and an HTTP
write, all competing with the engine for the same cores. The first chunk goes out at
once (time to first token is untouched); later text is gathered for up to
`interval_s` and sent together, as Ray Serve LLM and vLLM do with a stream interval.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from deployments.types import GenerationChunk


async def coalesce(chunks: AsyncIterator[GenerationChunk], interval_s: float) -> AsyncIterator[GenerationChunk]:
    if interval_s <= 0:
        async for chunk in chunks:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    source = chunks.__aiter__()
    pending: list[str] = []
    deadline = None
    fetch = None
    sent_first = False
    try:
        while True:
            fetch = fetch or asyncio.ensure_future(source.__anext__())
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({fetch}, timeout=timeout)
            if not done:  # the interval is over: send what has gathered
                yield GenerationChunk(text="".join(pending))
                pending, deadline = [], None
                continue
            task, fetch = fetch, None
            try:
                chunk = task.result()
            except StopAsyncIteration:
                break
            if chunk.finish_reason is not None or not sent_first:
                if pending:
                    yield GenerationChunk(text="".join(pending))
                    pending, deadline = [], None
                sent_first = True
                yield chunk
                continue
            pending.append(chunk.text)
            deadline = deadline or loop.time() + interval_s
        if pending:
            yield GenerationChunk(text="".join(pending))
    finally:
        if fetch is not None:
            fetch.cancel()
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
