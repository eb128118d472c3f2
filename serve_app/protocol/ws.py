"""Wire protocol of `WS /api/v1/ws`: JSON text messages, each with a `type`.

Client -> server: `auth` (unless the key came in the handshake headers), then any number of
`generate` / `chat` requests (each with a client-chosen `id`, answered concurrently) and
`cancel`. Server -> client: `ready`, then per request `token` events (with `tools`: the text
answer's pieces only; with `logprobs`: each token's log probabilities), one `done` with usage
(and the `tool_calls`),
or one `error` (an OpenAI error object); an `error` without `id` concerns the socket itself.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest
from serve_app.protocol.common import ChoiceLogprobs, ToolCall, WithoutEmptyCalls

RequestId = Annotated[str, Field(min_length=1, max_length=64, description="Chosen by the client; echoed back.")]


class WsAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auth"]
    api_key: str = Field(min_length=1)


class WsGenerate(GenerateRequest):
    type: Literal["generate"]
    id: RequestId


class WsChat(ChatRequest):
    type: Literal["chat"]
    id: RequestId


class WsCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["cancel"]
    id: RequestId


WsClientMessage = Union[WsAuth, WsGenerate, WsChat, WsCancel]
CLIENT_MESSAGES: dict[str, type[BaseModel]] = {"auth": WsAuth, "generate": WsGenerate, "chat": WsChat, "cancel": WsCancel}


class WsUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class WsReady(BaseModel):
    type: Literal["ready"] = "ready"
    models: list[str]
    default_model: str


class WsToken(WithoutEmptyCalls):
    DROPPED_WHEN_NONE = ("logprobs",)

    type: Literal["token"] = "token"
    id: str
    text: str
    logprobs: Optional[ChoiceLogprobs] = Field(
        None, description="With `logprobs: true`: this message's tokens, as OpenAI's chat `logprobs` (a message "
        "may carry tokens whose text is still held back, and with `tools` the calls' tokens).")


class WsDone(WithoutEmptyCalls):
    type: Literal["done"] = "done"
    id: str
    model: str
    response: str = Field(description="The whole answer (the tokens joined); with `tools`, the text answer.")
    finish_reason: Optional[str] = Field(description="`tool_calls` when the model called tools.")
    tool_calls: Optional[list[ToolCall]] = Field(None, description="With `tools`: the calls, as OpenAI's "
                                                 "`message.tool_calls`; absent when the model answered in text.")
    usage: WsUsage
    processing_time: float


class WsError(BaseModel):
    type: Literal["error"] = "error"
    id: Optional[str] = None
    error: dict = Field(description="The OpenAI error object: message, type, param, code, request_id.")
