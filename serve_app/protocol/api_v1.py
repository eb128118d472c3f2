"""Wire protocol of the `/api/v1` REST API (the shapes our bots are written against)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol.common import ChatMessage, SamplingFields


class _Request(SamplingFields):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, description="Model name; omitted means DEFAULT_MODEL.")
    stream: bool = Field(False, description="Answer as Server-Sent Events.")


class GenerateRequest(_Request):
    prompt: str = Field(min_length=1, description="Text to complete.")


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")


class GenerateResponse(BaseModel):
    response: str
    model: str
    tokens_used: int = Field(description="Prompt plus completion tokens.")
    processing_time: float = Field(description="Seconds spent on the request.")
    timestamp: str = Field(description="ISO-8601 UTC time of the answer.")


class ModelInfo(BaseModel):
    name: str
    type: str
    format: Optional[str]
    state: str
    replicas: int = 0
    description: Optional[str] = None
    in_flight: Optional[int] = Field(None, description="Requests the model is working on (loaded models).")
    cancelled: Optional[int] = Field(None, description="Generations stopped because the client left.")
    load_time_s: Optional[float] = None
    resident_memory_bytes: Optional[int] = None
    node_id: Optional[str] = Field(None, description="Ray node of the replica that reported the live figures.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default_model: str


class HealthResponse(BaseModel):
    status: str
    models: dict[str, str]


class ReadinessResponse(BaseModel):
    status: str = Field(description="`ready` (HTTP 200) or `not_ready` (HTTP 503).")
    default_model: str
    models: dict[str, str] = Field(description="Each model's state: ready, loading, unloaded, failed, unknown.")
