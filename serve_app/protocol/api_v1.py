"""Wire protocol of the `/api/v1` REST API (the shapes our bots are written against)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.protocol.common import SESSION_ID_PATTERN, ChatMessage, SamplingFields
from serve_app.protocol.email import EmailOptions, EmailReply


class _Request(SamplingFields):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, description="Model name; omitted means DEFAULT_MODEL.")
    stream: bool = Field(False, description="Answer as Server-Sent Events.")
    cache: Optional[bool] = Field(
        None, description="true: cache even a sampled answer; false: bypass the cache. Default: cache deterministic requests."
    )
    format: Literal["text", "email"] = Field("text", description="`email` adds a ready-to-send reply.")
    email: Optional[EmailOptions] = Field(None, description="The email being answered (with format `email`).")

    @model_validator(mode="after")
    def _email_options(self):
        if self.format == "email" and self.stream:
            raise ValueError("format 'email' cannot be streamed; send stream: false")
        if self.email is not None and self.format != "email":
            raise ValueError("email options need format 'email'")
        if self.email is not None and self.email.quote_original and not self.email.original:
            raise ValueError("email.quote_original needs email.original")
        return self


class GenerateRequest(_Request):
    prompt: str = Field(min_length=1, description="Text to complete.")


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far (new turns only with a session).")
    session_id: Optional[str] = Field(None, pattern=SESSION_ID_PATTERN, description="Keep this conversation on the server.")


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
    cached: bool = Field(False, description="Answered from the response cache.")
    session_id: Optional[str] = Field(None, description="The session this turn was added to.")
    email: Optional[EmailReply] = Field(None, description="With format `email`: the reply, ready to send.")


class SessionSummary(BaseModel):
    session_id: str
    model: str
    messages: int
    updated: float


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class SessionDetail(BaseModel):
    session_id: str
    model: str
    messages: list[dict]
    updated: float


class ModelInfo(BaseModel):
    name: str
    type: str
    task: str = Field(description="`generate` (chat, completions) or `embed` (embeddings).")
    format: Optional[str]
    state: str
    replicas: int = 0
    description: Optional[str] = None
    in_flight: Optional[int] = Field(None, description="Requests the model is working on (loaded models).")
    queued: Optional[int] = Field(None, description="Of those in flight, requests waiting for the model's engine.")
    cancelled: Optional[int] = Field(None, description="Generations stopped because the client left.")
    served: Optional[int] = Field(None, description="Generation requests the model has run (cache hits excluded).")
    load_time_s: Optional[float] = None
    resident_memory_bytes: Optional[int] = None
    adapters: list[str] = Field(default_factory=list, description="LoRA adapters: request `<model>:<adapter>`.")
    loaded_adapters: Optional[list[str]] = Field(None, description="Adapters in memory, least recently used first.")
    node_id: Optional[str] = Field(None, description="Ray node of the replica that reported the live figures.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default_model: Optional[str]
    default_embedding_model: Optional[str] = None


class HealthResponse(BaseModel):
    status: str
    models: dict[str, str]


class ReadinessResponse(BaseModel):
    status: str = Field(description="`ready` (HTTP 200) or `not_ready` (HTTP 503).")
    default_model: str
    models: dict[str, str] = Field(description="Each model's state: ready, loading, unloaded, failed, unknown.")
    redis: Optional[str] = Field(None, description="`ok` or `down` when REDIS_URL is set.")
    memory_available_percent: Optional[float] = Field(None, description="The node's available memory.")
    reasons: list[str] = Field(default_factory=list, description="Why the server is not ready.")
