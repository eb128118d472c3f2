"""Wire types of `POST /api/v1/generate/batch`.

Items arrive as raw objects and are validated one by one, so a bad item becomes that item's
error instead of failing the batch.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest, GenerateResponse
from serve_app.protocol.common import schema_limits

ItemId = Field(min_length=1, max_length=128, description="Chosen by the caller; echoed in the result.")


class _NoStream:
    @model_validator(mode="after")
    def _no_stream(self):
        if self.stream:
            raise ValueError("batch items cannot be streamed")
        return self


class BatchGenerateItem(_NoStream, GenerateRequest):
    id: str = ItemId
    type: Literal["generate"] = "generate"


class BatchChatItem(_NoStream, ChatRequest):
    id: str = ItemId
    type: Literal["chat"] = "chat"


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"format": "email", "items": [
            {"id": "mail-001", "prompt": "Reply politely: are you open on Sundays?", "max_tokens": 80,
             "email": {"subject": "Opening hours", "sender": "bob@example.com"}},
            {"id": "mail-002", "type": "chat", "model": "gpt-4", "max_tokens": 80,
             "messages": [{"role": "user", "content": "I want a refund."}]},
        ]},
    ]})

    # Any objects: each item is validated on its own and a bad one becomes that item's error.
    items: list[dict[str, Any]] = Field(
        min_length=1, description="Generate items (`prompt`) or chat items (`messages`), each with an `id`; "
        "at most BATCH_MAX_ITEMS.", json_schema_extra=schema_limits(maxItems="batch_max_items"),
    )
    format: Optional[Literal["text", "email"]] = Field(None, description="Default `format` for items naming none.")


class BatchItemResult(BaseModel):
    index: int
    id: Optional[str] = None
    status: Literal["ok", "error"]
    result: Optional[GenerateResponse] = None
    error: Optional[dict] = Field(None, description="The OpenAI error object when status is `error`.")


class BatchTotals(BaseModel):
    items: int
    succeeded: int
    failed: int
    tokens_used: int
    processing_time: float


class BatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"object": "batch",
         "results": [
             {"index": 0, "id": "mail-001", "status": "ok", "result": {
                 "response": "Yes, we are open on Sundays from 10 to 16.", "model": "smollm2-135m-instruct",
                 "tokens_used": 41, "processing_time": 0.52, "timestamp": "2026-11-27T02:04:17.221Z", "cached": False}},
             {"index": 1, "id": "mail-002", "status": "error", "error": {
                 "message": "The model `gpt-4` does not exist or you do not have access to it.",
                 "type": "invalid_request_error", "param": "model", "code": "model_not_found"}},
         ],
         "totals": {"items": 2, "succeeded": 1, "failed": 1, "tokens_used": 41, "processing_time": 0.55}},
    ]})

    object: Literal["batch"] = "batch"
    results: list[BatchItemResult]
    totals: BatchTotals
