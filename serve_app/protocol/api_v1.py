"""Wire protocol of the `/api/v1` REST API (the shapes our bots are written against)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.protocol.common import (
    PROMPT_LIMITS,
    SESSION_ID_PATTERN,
    ChatMessage,
    ChatTokenFields,
    ChoiceLogprobs,
    SamplingFields,
    StreamOptions,
    ToolCall,
    ToolFields,
    WithoutEmptyCalls,
    model_names,
    schema_limits,
)

MAX_EMBEDDING_INPUTS = 2048  # strings in one embeddings request, as OpenAI
# A string or a list of strings, none empty, each within MAX_PROMPT_LENGTH (enforced by EmbeddingService).
EMBEDDING_INPUT_LIMITS = schema_limits(minLength=1, maxLength="max_prompt_length", minItems=1,
                                       maxItems=MAX_EMBEDDING_INPUTS)
from serve_app.protocol.email import EmailOptions, EmailReply


class _Request(ChatTokenFields, SamplingFields):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, description="Model name; omitted means DEFAULT_MODEL.",
                                 json_schema_extra=model_names("generate"))
    stream: bool = Field(False, description="Answer as Server-Sent Events.")
    stream_options: Optional[StreamOptions] = Field(
        None, description="Accepted as in OpenAI; the last event always carries `tokens_used` (WebSocket: `usage`).")
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
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "smollm2-135m-instruct", "prompt": "The sky is", "max_tokens": 20, "temperature": 0.7, "top_p": 0.95},
        {"prompt": "Write a short thank-you note.", "max_tokens": 120, "format": "email",
         "email": {"subject": "Order 1042", "sender": "ann@example.com", "original": "Thanks for the quick delivery!"}},
    ]})

    prompt: str = Field(min_length=1, description="Text to complete (at most MAX_PROMPT_LENGTH characters).",
                        json_schema_extra=PROMPT_LIMITS)


class ChatRequest(ToolFields, _Request):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "smollm2-135m-instruct", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                                       {"role": "user", "content": "Say hello."}],
         "max_tokens": 40, "stream": True},
        {"messages": [{"role": "user", "content": "And in French?"}], "session_id": "tg-4211-chat"},
    ]})

    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation so far (new turns only with a session); at most MAX_MESSAGES.",
        json_schema_extra=schema_limits(maxItems="max_messages"),
    )
    session_id: Optional[str] = Field(None, pattern=SESSION_ID_PATTERN, description="Keep this conversation on the server.")


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, json_schema_extra={"examples": [
        {"model": "minilm-l6-v2", "input": ["opening hours", "when are you open?"]},
    ]})

    model: Optional[str] = Field(None, description="An embedding model; omitted means DEFAULT_EMBEDDING_MODEL.",
                                 json_schema_extra=model_names("embed"))
    input: Union[str, list[str]] = Field(description="A string or a list of strings.",
                                         json_schema_extra=EMBEDDING_INPUT_LIMITS)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbedResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"embeddings": [[0.0132, -0.0871, 0.0412], [0.0207, -0.0798, 0.0385]], "model": "minilm-l6-v2",
         "dimensions": 384, "tokens_used": 11, "processing_time": 0.0123, "timestamp": "2026-11-27T02:04:17.221Z"},
    ]})

    embeddings: list[list[float]] = Field(description="One unit-length vector per input, in input order.")
    model: str
    dimensions: int
    tokens_used: int = Field(description="Tokens the model read.")
    processing_time: float
    timestamp: str


class GenerateResponse(WithoutEmptyCalls):
    DROPPED_WHEN_NONE = ("tool_calls", "finish_reason", "logprobs")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"response": " blue because air scatters blue light more than red.", "model": "smollm2-135m-instruct",
         "tokens_used": 24, "processing_time": 0.31, "timestamp": "2026-11-27T02:04:17.221Z", "cached": False},
    ]})

    response: str
    model: str
    tokens_used: int = Field(description="Prompt plus completion tokens.")
    processing_time: float = Field(description="Seconds spent on the request.")
    timestamp: str = Field(description="ISO-8601 UTC time of the answer.")
    cached: bool = Field(False, description="Answered from the response cache.")
    session_id: Optional[str] = Field(None, description="The session this turn was added to.")
    email: Optional[EmailReply] = Field(None, description="With format `email`: the reply, ready to send.")
    tool_calls: Optional[list[ToolCall]] = Field(
        None, description="With `tools`: the calls the model made (then `response` is empty), as OpenAI's "
        "`message.tool_calls`; absent when it answered in text.")
    finish_reason: Optional[str] = Field(
        None, description="With `tools`: `tool_calls` when the model called, else `stop` or `length`.")
    logprobs: Optional[ChoiceLogprobs] = Field(
        None, description="With `logprobs: true`: every generated token's log probability (and `top_logprobs` "
        "alternatives), as OpenAI's chat `choices[].logprobs`; streamed: each event's tokens.")


class SessionSummary(BaseModel):
    session_id: str
    model: str
    messages: int
    updated: float


class SessionList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"sessions": [{"session_id": "tg-4211-chat", "model": "smollm2-135m-instruct", "messages": 4,
                       "updated": 1795313057.2}]},
    ]})

    sessions: list[SessionSummary]


class SessionDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"session_id": "tg-4211-chat", "model": "smollm2-135m-instruct", "updated": 1795313057.2,
         "messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]},
    ]})

    session_id: str
    model: str
    messages: list[dict]
    updated: float


class SessionDeleted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"session_id": "tg-4211-chat", "deleted": True}]})

    session_id: str
    deleted: bool


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
    pid: Optional[int] = Field(None, description="Process id of the replica that reported the live figures.")
    last_used: Optional[str] = Field(None, description="When the model last got a request (ISO 8601, UTC).")
    disabled: bool = Field(False, description="Unloaded with `disable`: refused until an explicit load.")
    footprint_bytes: Optional[int] = Field(None, description="Memory one replica is budgeted (MODEL_MEMORY_BUDGET).")
    state_reason: Optional[str] = Field(
        None, description="Why a `failed` model failed (Ray Serve's message): shown to keys with the `admin` scope "
        "only.")


class ModelLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, json_schema_extra={"examples": [
        {"model": "gemma3-270m"}, {"model": "gemma3-270m", "wait": False},
    ]})

    model: str = Field(description="The model to load (a disabled model is enabled again).",
                       json_schema_extra=model_names("any"))
    wait: bool = Field(True, description="Answer when the model is ready; false: answer 202 at once.")


class ModelUnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, json_schema_extra={"examples": [
        {"model": "gemma3-270m"}, {"model": "gemma3-270m", "force": True},
        {"model": "gemma3-270m", "disable": True, "wait": False},
    ]})

    model: str = Field(description="The model to unload.", json_schema_extra=model_names("any"))
    force: bool = Field(False, description="Cancel in-flight requests (they end with `model_unloaded`) "
                        "instead of letting them finish.")
    disable: bool = Field(False, description="Refuse requests for the model until an explicit load.")
    wait: bool = Field(True, description="Answer when the memory is freed; false: answer 202 once drained.")


class ModelStateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [
        {"model": "gemma3-270m", "state": "ready", "replicas": 1, "disabled": False},
        {"model": "gemma3-270m", "state": "unloading", "replicas": 1, "disabled": False},
    ]})

    model: str
    state: str = Field(description="ready, loading, unloaded, unloading or failed.")
    replicas: int
    disabled: bool = False


class ModelsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"models": [
            {"name": "smollm2-135m-instruct", "type": "gguf", "task": "generate", "format": "Q4_1", "state": "ready",
             "replicas": 1, "in_flight": 3, "queued": 2, "cancelled": 0, "served": 118, "load_time_s": 1.42,
             "resident_memory_bytes": 312475648, "adapters": [], "loaded_adapters": [],
             "node_id": "5f1c0a7e9d2b4c6f8e3a1b0d7c9e2f4a6b8d0c1e3f5a7b9c2d4e6f80", "pid": 48211,
             "last_used": "2026-11-27T05:41:09.311Z", "disabled": False, "footprint_bytes": 536870912},
            {"name": "gemma3-270m", "type": "gguf", "task": "generate", "format": "Q4_K_M", "state": "unloaded",
             "replicas": 0, "adapters": [], "last_used": "2026-11-27T05:12:40.002Z", "disabled": False,
             "footprint_bytes": 805306368},
        ], "default_model": "smollm2-135m-instruct", "default_embedding_model": "minilm-l6-v2"},
    ]})

    models: list[ModelInfo]
    default_model: Optional[str]
    default_embedding_model: Optional[str] = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "models": {"smollm2-135m-instruct": "ready", "gemma3-270m": "unloaded"}},
    ]})

    status: str
    models: dict[str, str]


class ReadinessResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "default_model": "smollm2-135m-instruct", "models": {"smollm2-135m-instruct": "ready"},
         "redis": "ok", "memory_available_percent": 61.5, "reasons": []},
        {"status": "not_ready", "default_model": "smollm2-135m-instruct",
         "models": {"smollm2-135m-instruct": "loading"},
         "redis": "down", "memory_available_percent": 61.5,
         "reasons": ["default model 'smollm2-135m-instruct' is not ready", "Redis is unreachable"]},
    ]})

    status: str = Field(description="`ready` (HTTP 200) or `not_ready` (HTTP 503).")
    default_model: str
    models: dict[str, str] = Field(description="Each model's state: ready, loading, unloaded, failed, unknown.")
    redis: Optional[str] = Field(None, description="`ok` or `down` when REDIS_URL is set.")
    memory_available_percent: Optional[float] = Field(None, description="The node's available memory.")
    reasons: list[str] = Field(default_factory=list, description="Why the server is not ready.")


GENERATE_SSE_EXAMPLE = (
    'data: {"response": "Hello", "model": "smollm2-135m-instruct", "done": false}\n\n'
    'data: {"response": "!", "model": "smollm2-135m-instruct", "done": false}\n\n'
    'data: {"response": "", "model": "smollm2-135m-instruct", "tokens_used": 41, "processing_time": 0.4, '
    '"timestamp": "2026-11-27T02:04:17.221Z", "done": true, "finish_reason": "stop"}\n\n'
    "data: [DONE]\n\n"
)
METRICS_EXAMPLE = (
    "# TYPE aicore_requests_total counter\n"
    'aicore_requests_total{model="smollm2-135m-instruct",route="/api/v1/generate",status="200"} 118.0\n'
    "# TYPE aicore_model_loads_total counter\n"
    'aicore_model_loads_total{model="smollm2-135m-instruct",outcome="ok"} 1.0\n'
    "# TYPE aicore_model_requests_queued gauge\n"
    'aicore_model_requests_queued{model="smollm2-135m-instruct",node="5f1c0a7e..."} 2.0\n'
)
