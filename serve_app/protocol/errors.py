"""The error body every HTTP error answer carries (OpenAI's shape, plus the request id)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, "
                      "permission_error, requests/tokens (rate limits), server_error, overloaded_error...")
    param: Optional[str] = Field(description="The request field at fault, if any.")
    code: Optional[str] = Field(description="A stable machine-readable code (e.g. model_not_found).")
    request_id: Optional[str] = Field(None, description="The X-Request-ID of the request, to find it in the logs.")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"message": "The model `gpt-4` does not exist or you do not have access to it.",
                   "type": "invalid_request_error", "param": "model", "code": "model_not_found",
                   "request_id": "5b0f3c9e2a7d4e61"}},
    ]})

    error: ErrorDetail
