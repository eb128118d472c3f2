"""Wire protocol of the `/api/v1` REST API (the shapes our bots are written against)."""

from __future__ import annotations

from typing import Optional, Union

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


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, description="An embedding model; omitted means DEFAULT_EMBEDDING_MODEL.")
    input: Union[str, list[str]] = Field(description="A string or a list of strings.")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="One unit-length vector per input, in input order.")
    model: str
    dimensions: int
    tokens_used: int = Field(description="Tokens the model read.")
    processing_time: float
    timestamp: str


class GenerateResponse(BaseModel):
    response: str
    model: str
    tokens_used: int = Field(description="Prompt plus completion tokens.")
    processing_time: float = Field(description="Seconds spent on the request.")
    timestamp: str = Field(description="ISO-8601 UTC time of the answer.")


class ModelInfo(BaseModel):
    name: str
    type: str
    task: str = Field(description="`generate` (chat, completions) or `embed` (embeddings).")
    format: Optional[str]
    state: str
    replicas: int = 0
    description: Optional[str] = None
    in_flight: Optional[int] = Field(None, description="Requests the model is working on (loaded models).")
    cancelled: Optional[int] = Field(None, description="Generations stopped because the client left.")
    load_time_s: Optional[float] = None
    resident_memory_bytes: Optional[int] = None
    adapters: list[str] = Field(default_factory=list, description="LoRA adapters: request `<model>:<adapter>`.")
    loaded_adapters: Optional[list[str]] = Field(None, description="Adapters in memory, least recently used first.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default_model: Optional[str]
    default_embedding_model: Optional[str] = None


class HealthResponse(BaseModel):
    status: str
    models: dict[str, str]
