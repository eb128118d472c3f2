"""Wire types of `POST /api/v1/generate/batch`.

Items arrive as raw objects and are validated one by one, so a bad item becomes that item's
error instead of failing the batch.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest, GenerateResponse

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
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1, description="Generate items (`prompt`) or chat items (`messages`), each with an `id`."
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
    object: Literal["batch"] = "batch"
    results: list[BatchItemResult]
    totals: BatchTotals
