"""Batch generation (the email bot's endpoint): validate each item alone, run them concurrently.

At most `batch_concurrency` items of one batch generate at a time, so a batch never takes
more of a model than a few single requests would; one bad item is that item's error only.
Each item is a request of its own in the admission pipeline: admitted with the key looked up
again, it counts against the key's requests and tokens per minute and settles its own usage.
The synchronous batch call itself only checks the key (a key-level refusal is its HTTP error)
and is no request; a job's submission is one (serve_app/batch/jobs.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable, Optional, Union

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from core.errors import InvalidRequest, Overloaded
from core.settings import Settings
from serve_app.error_mapping import error_body, to_aicore_error, validation_error
from serve_app.pipeline import Admission, Outcome, Pipeline, RequestContext
from serve_app.protocol.batch import (
    BatchChatItem,
    BatchGenerateItem,
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    BatchTotals,
)
from serve_app.replies import generate_response
from serve_app.serving import GenerationService, RequestOptions

Item = Union[BatchGenerateItem, BatchChatItem]
Admit = Callable[[], Awaitable[Admission]]  # an item's admission, the key looked up again
MAX_OVERLOAD_WAIT_S = 30  # longest pause before a job asks an overloaded model again
# An item's `id` (BatchGenerateItem.id): an id longer than this is never echoed in a result.
ITEM_ID_MAX_CHARS = next(m.max_length for m in BatchGenerateItem.model_fields["id"].metadata
                         if getattr(m, "max_length", None))
ERROR_PARAM_MAX_CHARS, ERROR_MESSAGE_MAX_CHARS = 128, 512  # an item's error never echoes much of its input


def _short(text: Optional[str], limit: int) -> Optional[str]:
    return text if text is None or len(text) <= limit else text[: limit - 3] + "..."


def parse_item(raw: dict, default_format: Optional[str]) -> Item:
    kind = raw.get("type") or ("chat" if "messages" in raw else "generate")
    if default_format and "format" not in raw:
        raw = {**raw, "format": default_format}
    model = {"generate": BatchGenerateItem, "chat": BatchChatItem}.get(kind)
    if model is None:
        raise InvalidRequest(f"type must be 'generate' or 'chat', not {_short(repr(kind), 40)}", param="type")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_error(RequestValidationError(error.errors())) from None


class Prepared:
    """One item of a batch after validation: the item, or the error that is its result."""

    def __init__(self, index: int, raw: Any, item: Optional[Item] = None, error: Optional[BaseException] = None):
        self.index = index
        self.item = item
        self.error = error
        self.id = item.id if item is not None else raw_id(raw)

    def failed(self, error: BaseException) -> BatchItemResult:
        body = error_body(to_aicore_error(error))["error"]
        body["message"] = _short(body["message"], ERROR_MESSAGE_MAX_CHARS)
        body["param"] = _short(body["param"], ERROR_PARAM_MAX_CHARS)
        return BatchItemResult(index=self.index, id=self.id, status="error", error=body)


def raw_id(raw: Any) -> Optional[str]:
    """An item's `id` as sent, echoed in its result only when it is a string of an id's length."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= ITEM_ID_MAX_CHARS else None


def prepare(items: list[dict], default_format: Optional[str]) -> list[Prepared]:
    """Validate every item in order; an id used by an earlier valid item is that item's error."""
    seen: set[str] = set()
    prepared = []
    for index, raw in enumerate(items):
        try:
            item = parse_item(raw, default_format)
            if item.id in seen:
                raise InvalidRequest(f"id {item.id!r} is used by an earlier item", param="id")
            seen.add(item.id)
            prepared.append(Prepared(index, raw, item=item))
        except Exception as error:
            prepared.append(Prepared(index, raw, error=error))
    return prepared


def totals(results: list[BatchItemResult], started: float) -> BatchTotals:
    ok = [r for r in results if r.status == "ok"]
    return BatchTotals(
        items=len(results), succeeded=len(ok), failed=len(results) - len(ok),
        tokens_used=sum(r.result.tokens_used for r in ok),
        processing_time=round(time.monotonic() - started, 4),
    )


class BatchService:
    def __init__(self, service: GenerationService, settings: Settings, pipeline: Pipeline):
        self.service = service
        self.settings = settings
        self.pipeline = pipeline

    async def run(self, body: BatchRequest, caller: RequestContext) -> BatchResponse:
        """The items of one call by `caller` (its key checked already), each admitted on its own."""
        if len(body.items) > self.settings.batch_max_items:
            raise InvalidRequest(
                f"{len(body.items)} items; a batch takes at most {self.settings.batch_max_items}",
                param="items", code="too_many_items",
            )
        started = time.monotonic()
        gate = asyncio.Semaphore(self.settings.batch_concurrency)

        items: list[RequestContext] = []

        async def admit() -> Admission:
            context = RequestContext("batch", caller.key, caller.client_ip, Outcome(client_ip=caller.client_ip))
            items.append(context)
            return await self.pipeline.admit(context, "inference")

        async def one(entry: Prepared) -> BatchItemResult:
            if entry.error is not None:
                return entry.failed(entry.error)
            async with gate:
                try:
                    return await self.generate(entry, admit)
                except Exception as refused:  # the key changed since the call began: this item's error
                    return entry.failed(refused)

        results = list(await asyncio.gather(*(one(entry) for entry in prepare(body.items, body.format))))
        outcome = caller.outcome  # the call's access-log line and headers: its items' tokens, the last limits
        for item in items:
            outcome.prompt_tokens += item.outcome.prompt_tokens
            outcome.completion_tokens += item.outcome.completion_tokens
            outcome.ratelimit_headers = item.outcome.ratelimit_headers or outcome.ratelimit_headers
            outcome.model = item.outcome.model or outcome.model
        return BatchResponse(results=results, totals=totals(results, started))

    async def generate(self, entry: Prepared, admit: Admit, retry_overloaded: bool = False) -> BatchItemResult:
        """Run one valid item, admitted by `admit` (the key looked up again: its refusal, e.g. a
        revoke, is raised, not the item's result) and settled on its own; its failure (unknown
        model, limits, overload, ...) is its result.

        `retry_overloaded` (asynchronous jobs): a model that refuses for overload (503) is asked
        again after its Retry-After, for as long as it takes, each attempt admitted anew; the
        job's cancel stops the wait."""
        while True:
            admission = await admit()
            try:
                async with admission.settling():
                    return await self._generate(entry, admission)
            except Exception as error:
                mapped = to_aicore_error(error)
                if not (retry_overloaded and _waits(mapped)):
                    return entry.failed(mapped)
            wait_s = getattr(mapped, "retry_after_s", None) or 1
            await asyncio.sleep(min(wait_s, MAX_OVERLOAD_WAIT_S))

    async def _generate(self, entry: Prepared, admission: Admission) -> BatchItemResult:
        item, key_id = entry.item, admission.key_id
        tools = item.tool_use() if isinstance(item, BatchChatItem) else None
        session_id = getattr(item, "session_id", None)  # continued as by /api/v1/chat
        generation = await self.service.start(
            admission, item.model, uuid.uuid4().hex, item.to_sampling_params(),
            prompt=item.prompt if isinstance(item, BatchGenerateItem) else None,
            messages=[m.as_dict() for m in item.messages] if isinstance(item, BatchChatItem) else None,
            priority=item.priority, tools=tools,
            options=RequestOptions(endpoint="-", tenant=key_id, owner=key_id, cache=item.cache, session_id=session_id),
        )
        result = await generation.collect()
        answer = generation.tool_answer(result.text)  # read as on every channel
        reply = generate_response(generation, result.text, item, session_id, answer, result.logprobs)
        return BatchItemResult(index=entry.index, id=item.id, status="ok", result=reply)


def _waits(error: Exception) -> bool:
    """A job's item waits (it does not fail) while the model is overloaded or its key has as many
    requests running as it may (MAX_IN_FLIGHT_PER_KEY): both pass."""
    return isinstance(error, Overloaded) or getattr(error, "code", None) == "too_many_in_flight"
