"""Batch generation (the email bot's endpoint): validate each item alone, run them concurrently.

At most `batch_concurrency` items of one batch generate at a time, so a batch never takes
more of a model than a few single requests would; one bad item is that item's error only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Optional, Union

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from deployments.errors import InvalidRequest
from serve_app.errors import error_body, to_aicore_error, validation_error
from serve_app.protocol.batch import (
    BatchChatItem,
    BatchGenerateItem,
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    BatchTotals,
)
from serve_app.replies import generate_response
from serve_app.serving import GenerationService
from serve_app.settings import Settings

Item = Union[BatchGenerateItem, BatchChatItem]


def parse_item(raw: dict, default_format: Optional[str]) -> Item:
    kind = raw.get("type") or ("chat" if "messages" in raw else "generate")
    if default_format and "format" not in raw:
        raw = {**raw, "format": default_format}
    model = {"generate": BatchGenerateItem, "chat": BatchChatItem}.get(kind)
    if model is None:
        raise InvalidRequest(f"type must be 'generate' or 'chat', not {kind!r}", param="type")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_error(RequestValidationError(error.errors())) from None


class BatchService:
    def __init__(self, service: GenerationService, settings: Settings):
        self.service = service
        self.settings = settings

    async def run(self, body: BatchRequest, principal: Any) -> BatchResponse:
        if len(body.items) > self.settings.batch_max_items:
            raise InvalidRequest(
                f"{len(body.items)} items; a batch takes at most {self.settings.batch_max_items}",
                param="items", code="too_many_items",
            )
        started = time.monotonic()
        gate = asyncio.Semaphore(self.settings.batch_concurrency)
        seen: set[str] = set()
        jobs = []
        for index, raw in enumerate(body.items):
            jobs.append(self._one(index, raw, body.format, seen, gate, principal))
        results = await asyncio.gather(*jobs)
        ok = [r for r in results if r.status == "ok"]
        return BatchResponse(
            results=list(results),
            totals=BatchTotals(
                items=len(results), succeeded=len(ok), failed=len(results) - len(ok),
                tokens_used=sum(r.result.tokens_used for r in ok),
                processing_time=round(time.monotonic() - started, 4),
            ),
        )

    async def _one(self, index: int, raw: dict, default_format: Optional[str], seen: set[str],
                   gate: asyncio.Semaphore, principal: Any) -> BatchItemResult:
        item_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        try:
            item = parse_item(raw, default_format)
            if item.id in seen:
                raise InvalidRequest(f"id {item.id!r} is used by an earlier item", param="id")
            seen.add(item.id)
            async with gate:
                generation = await self.service.start(
                    item.model, uuid.uuid4().hex, item.to_sampling_params(),
                    prompt=item.prompt if isinstance(item, BatchGenerateItem) else None,
                    messages=[m.as_dict() for m in item.messages] if isinstance(item, BatchChatItem) else None,
                    principal=principal, priority=item.priority or "batch",
                )
                result = await generation.collect()
            return BatchItemResult(index=index, id=item.id, status="ok",
                                   result=generate_response(generation, result.text, item))
        except Exception as error:
            return BatchItemResult(index=index, id=item_id, status="error",
                                   error=error_body(to_aicore_error(error))["error"])
