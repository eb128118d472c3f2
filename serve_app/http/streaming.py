"""Server-Sent Events: every stream ends with exactly one `data: [DONE]`, also after an error."""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable, Iterable, Optional, Union

from fastapi import Request
from fastapi.responses import StreamingResponse

from serve_app.choices import Choices
from serve_app.generation import Generation
from serve_app.http.errors import sse_error_event

logger = logging.getLogger("aicore.stream")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse_stream(
    request: Request,
    generation: Union[Generation, Choices],
    on_chunk: Callable[[Any], Iterable[dict]],  # a Generation's chunk; of Choices, (index, chunk)
    on_end: Callable[[Any], Iterable[dict]],
    first: Iterable[dict] = (),
    headers: Optional[dict[str, str]] = None,
) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            for payload in first:
                yield _event(payload)
            async for chunk in generation.chunks():
                for payload in on_chunk(chunk):
                    yield _event(payload)
            for payload in on_end(generation):
                yield _event(payload)
        except Exception as error:  # after headers are sent, errors travel as an event
            yield sse_error_event(error, request)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})
