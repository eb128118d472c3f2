"""Wire protocol of the OpenAI-compatible `/v1` API, mirroring OpenAI's published shapes."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from serve_app.protocol.api_v1 import EMBEDDING_INPUT_LIMITS
from serve_app.protocol.common import (
    SESSION_ID_PATTERN,
    ChatMessage,
    ChatTokenFields,
    ChoiceLogprobs,
    Int,
    PositiveInt,
    SamplingFields,
    StreamOptions,
    ToolCall,
    ToolFields,
    WithoutEmptyCalls,
    integral,
    model_names,
    schema_limits,
)

# OpenAI's fields that AI Core does not do: the schema allows only the values that ask for nothing,
# and any other is refused by name with the reason (docs/structured-output.md, "Every request field").
NOT_DONE = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the deprecated functions field is not supported: send tools",
    "function_call": "the deprecated function_call field is not supported: send tool_choice",
    "reasoning_effort": "no served model reasons",
    "verbosity": "verbosity is not supported",
    "best_of": "best_of other than 1 is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
    "store": "AI Core stores no completions (send false or leave it out)",
}


# OpenAI allows up to 128; each choice is a sequence in the engine, and a replica runs few at once.
MAX_CHOICES = 8


def not_done(field: str, *nothing) -> BeforeValidator:
    """Lets through null and the values in `nothing`; refuses any other with the field's reason."""
    def check(value):
        if value is None or any(value is v or (type(value) is type(v) and value == v) for v in nothing):
            return value
        raise ValueError(NOT_DONE[field])

    return BeforeValidator(check)


class _OpenAIRequest(SamplingFields):
    # Unknown fields are refused by name (as OpenAI does); the fields of NOT_DONE when they ask for something.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Optional[str] = Field(None, json_schema_extra=model_names("generate"))
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: Int = Field(0, ge=0, le=2**31 - 1, description="Extension; 0 disables top-k as in OpenAI.")
    repeat_penalty: float = Field(1.0, gt=0, le=10, description="Extension (llama.cpp).")
    n: Int = Field(1, ge=1, le=MAX_CHOICES, description=f"Answers to return (1 to {MAX_CHOICES}); they share the "
                   "prompt's computation. Not with `session_id`; never cached.")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    cache: Optional[bool] = Field(None, description="Extension: true caches a sampled answer, false bypasses.")
    user: Optional[str] = Field(None, max_length=256, description="Accepted; no effect on the answer.")
    safety_identifier: Optional[str] = Field(None, max_length=256, description="As user.")
    metadata: Optional[dict[str, str]] = Field(None, description="Accepted; AI Core stores no completions to tag.")
    store: Annotated[Optional[Literal[False]], not_done("store", False)] = Field(
        None, description="Only false: AI Core stores no completions.")
    service_tier: Optional[Literal["auto", "default"]] = Field(None, description="One tier: accepted, no effect.")
    prompt_cache_key: Optional[str] = Field(None, max_length=256, description="Accepted; prompt reuse is automatic.")
    modalities: Optional[list[Literal["text"]]] = Field(None, description="Only text.")
    audio: Annotated[None, not_done("audio")] = None
    prediction: Annotated[None, not_done("prediction")] = None
    web_search_options: Annotated[None, not_done("web_search_options")] = None
    functions: Annotated[None, not_done("functions")] = Field(None, description="Refused: send tools.")
    function_call: Annotated[None, not_done("function_call")] = Field(None, description="Refused: send tool_choice.")
    reasoning_effort: Annotated[None, not_done("reasoning_effort")] = None
    verbosity: Annotated[None, not_done("verbosity")] = None


class ChatCompletionRequest(ToolFields, ChatTokenFields, _OpenAIRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Name three colours."}],
         "max_tokens": 40},
        {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a joke."}],
         "stream": True, "stream_options": {"include_usage": True}},
    ]})

    messages: list[ChatMessage] = Field(min_length=1, description="At most MAX_MESSAGES.",
                                        json_schema_extra=schema_limits(maxItems="max_messages"))
    session_id: Optional[str] = Field(None, pattern=SESSION_ID_PATTERN, description="Extension: server-side history.")


class CompletionRequest(_OpenAIRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "gemma3-270m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
    ]})

    # One prompt: a string, or a list holding exactly one.
    prompt: Union[str, list[str]] = Field(
        description="The prompt (at most MAX_PROMPT_LENGTH characters), or a list of exactly one.",
        json_schema_extra=schema_limits(minLength=1, maxLength="max_prompt_length", minItems=1, maxItems=1),
    )

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("exactly one prompt is supported")
            value = value[0]
        if not value:
            raise ValueError("prompt must not be empty")
        return value

    logprobs: Optional[Annotated[int, Field(ge=0, le=5), BeforeValidator(integral)]] = Field(
        None, description="Return each token's log probability and this many alternatives (GGUF models).")
    best_of: Annotated[Optional[Literal[1]], not_done("best_of", 1)] = None
    echo: Annotated[Optional[Literal[False]], not_done("echo", False)] = None
    suffix: Annotated[Optional[Literal[""]], not_done("suffix", "")] = None

    def to_sampling_params(self):
        params = super().to_sampling_params()
        return replace(params, logprobs=self.logprobs) if self.logprobs is not None else params


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(WithoutEmptyCalls):
    role: Literal["assistant"] = "assistant"
    content: Optional[str]
    tool_calls: Optional[list[ToolCall]] = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Optional[str]
    logprobs: Optional[ChoiceLogprobs] = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "chatcmpl-3f9c2a7d5b1e4c0893a6f1d2e4b7c9a0", "object": "chat.completion", "created": 1795313057,
         "model": "smollm2-135m-instruct",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Red, green and blue."},
                      "finish_reason": "stop", "logprobs": None}],
         "usage": {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}},
    ]})

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class FunctionDelta(BaseModel):
    name: Optional[str] = None
    arguments: Optional[str] = Field(None, description="The next fragment of the arguments' JSON text.")


class ToolCallDelta(BaseModel):
    """A streamed call, as OpenAI streams it: its first delta has the id, type and name (arguments
    empty), the next ones fragments of the arguments only."""

    index: int
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: FunctionDelta


class Delta(WithoutEmptyCalls):
    role: Optional[str] = None
    content: Optional[str] = None
    tool_calls: Optional[list[ToolCallDelta]] = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Optional[str] = None
    logprobs: Optional[ChoiceLogprobs] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[UsageInfo] = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Optional[str] = None
    logprobs: Optional[CompletionLogprobs] = None


class Completion(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "cmpl-8a1d4f6c2e9b3a7051c0e2d4f6a8b9c1", "object": "text_completion", "created": 1795313057,
         "model": "gemma3-270m",
         "choices": [{"index": 0, "text": " Paris.", "finish_reason": "stop", "logprobs": None}],
         "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}},
    ]})

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[UsageInfo] = None


class ModelCard(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "smollm2-135m-instruct", "object": "model", "created": 1795313000, "owned_by": "ai-core"},
    ]})

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ai-core"
    state: Optional[str] = Field(None, description="Extension: ready, loading, unloaded, unloading or failed.")
    replicas: Optional[int] = Field(None, description="Extension: running replicas of the (base) model.")


class ModelList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"object": "list", "data": [
            {"id": "smollm2-135m-instruct", "object": "model", "created": 1795313000, "owned_by": "ai-core"},
            {"id": "tiny-llama:alpha", "object": "model", "created": 1795313000, "owned_by": "ai-core"},
        ]},
    ]})

    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), strict=True, json_schema_extra={"examples": [
        {"model": "minilm-l6-v2", "input": ["opening hours", "when are you open?"]},
        {"model": "minilm-l6-v2-int8", "input": "refund policy", "encoding_format": "base64"},
    ]})

    model: Optional[str] = Field(None, json_schema_extra=model_names("embed"))
    input: Union[str, list[str]] = Field(description="A string or a list of strings (token arrays are not accepted).",
                                         json_schema_extra=EMBEDDING_INPUT_LIMITS)
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")
    dimensions: Optional[PositiveInt] = Field(None, description="Must equal the model's size when given.")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"object": "list", "model": "minilm-l6-v2",
         "data": [{"object": "embedding", "index": 0, "embedding": [0.0132, -0.0871, 0.0412]},
                  {"object": "embedding", "index": 1, "embedding": [0.0207, -0.0798, 0.0385]}],
         "usage": {"prompt_tokens": 11, "total_tokens": 11}},
    ]})

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


_CHUNK = ('data: {"id": "chatcmpl-3f9c2a7d5b1e4c0893a6f1d2e4b7c9a0", "object": "chat.completion.chunk", '
          '"created": 1795313057, "model": "smollm2-135m-instruct", "choices": [{"index": 0, "delta": %s, '
          '"finish_reason": %s, "logprobs": null}], "usage": null}\n\n')
CHAT_SSE_EXAMPLE = (
    _CHUNK % ('{"role": "assistant", "content": ""}', "null")
    + _CHUNK % ('{"role": null, "content": "Why did the"}', "null")
    + _CHUNK % ('{"role": null, "content": null}', '"stop"')
    + "data: [DONE]\n\n"
)
COMPLETION_SSE_EXAMPLE = (
    'data: {"id": "cmpl-8a1d4f6c2e9b3a7051c0e2d4f6a8b9c1", "object": "text_completion", "created": 1795313057, '
    '"model": "gemma3-270m", "choices": [{"index": 0, "text": " Paris", "finish_reason": null, "logprobs": null}], '
    '"usage": null}\n\n'
    'data: {"id": "cmpl-8a1d4f6c2e9b3a7051c0e2d4f6a8b9c1", "object": "text_completion", "created": 1795313057, '
    '"model": "gemma3-270m", "choices": [{"index": 0, "text": ".", "finish_reason": "stop", "logprobs": null}], '
    '"usage": null}\n\n'
    "data: [DONE]\n\n"
)
