"""Fields both API families share: chat messages and sampling parameters."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from core.types import SamplingParams

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_STOP_SEQUENCES = 4


def integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer: read it as 3 (strict models still refuse true and "3")."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(integral)]  # the integer of request models
# The bound inside the validator, so that the schema says `minimum` (pydantic writes a bare `ge` otherwise).
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(integral)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(integral)]


def schema_limits(**limits: Union[str, int]) -> dict:
    """`json_schema_extra` for limits the server enforces itself (not pydantic): a str names a
    setting, read when the OpenAPI document is generated (serve_app/http/openapi.py); an int is fixed.
    They land on the string branches (minLength, maxLength) or array branches (minItems, maxItems)
    of the field's schema, so `Union[str, list[str]]` gets both."""
    return {"x-limits": limits}


def model_names(task: str) -> dict:
    """`json_schema_extra` of a field naming a model: the served schema lists the configured
    models of `task` (`generate`, `embed`, or `any`) as its enum (serve_app/http/openapi.py)."""
    return {"x-model-names": task}


PROMPT_LIMITS = schema_limits(maxLength="max_prompt_length")
TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str = Field(json_schema_extra=PROMPT_LIMITS)


class CalledFunction(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(description="The arguments as a JSON text, as the model produced them.")


class ToolCall(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: CalledFunction


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: Optional[str] = Field(None, max_length=4096)
    parameters: Optional[dict] = Field(None, description="JSON Schema of the arguments; omitted: any object.")
    strict: Optional[bool] = Field(None, description="true: unsupported schema keywords are refused, not dropped.")


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: ChosenFunction


class ToolFields(BaseModel):
    """`tools`, `tool_choice`, `parallel_tool_calls`: the same on every chat channel (serve_app/tool_calls.py)."""

    model_config = ConfigDict(strict=True)

    tools: Optional[list[Tool]] = Field(None, max_length=64, description="Functions the model may call (GGUF "
                                        "models; the calls come back as `tool_calls`).")
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = Field(
        None, description="Default `auto`: the model calls or answers in text; `required`: at least one call; "
        "a named function: that one; `none`: no call.")
    parallel_tool_calls: Optional[bool] = Field(None, description="Default true: several calls in one answer.")

    def tool_use(self):
        """The request's ToolUse (serve_app/tool_calls.py), or None without tools."""
        from serve_app.tool_calls import ToolUse

        return ToolUse.of(self.tools, self.tool_choice, self.parallel_tool_calls,
                          getattr(self, "response_format", None))


class WithoutEmptyCalls(BaseModel):
    """`tool_calls` (and the other fields of `DROPPED_WHEN_NONE`) appear only when set, as in OpenAI's answers."""

    DROPPED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("tool_calls",)

    @model_serializer(mode="wrap")
    def _drop_empty_calls(self, handler):
        data = handler(self)
        for name in self.DROPPED_WHEN_NONE:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    tool_calls: Optional[list[ToolCall]] = Field(None, description="An assistant's calls (as answered).")
    tool_call_id: Optional[str] = Field(None, max_length=128, description="A tool message: the call it answers.")
    # After role and tool_calls, which its check reads; checked also when absent (validate_default).
    content: Optional[Union[str, list[TextPart]]] = Field(
        None, validate_default=True,
        description="Text, or a list of text parts (null or absent only on an assistant message with tool_calls). "
        "All messages together: at most MAX_PROMPT_LENGTH characters (413 prompt_too_long).",
        json_schema_extra=PROMPT_LIMITS,
    )

    @field_validator("tool_calls")
    @classmethod
    def _calls_are_the_assistants(cls, value, info):
        if value and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return value

    @field_validator("content")
    @classmethod
    def _content_or_calls(cls, value, info):
        if value is None and not (info.data.get("role") == "assistant" and info.data.get("tool_calls")):
            raise ValueError("content is required (it may be null only on an assistant message with tool_calls)")
        return value

    def as_dict(self) -> dict:
        """The message as the serving layer takes it: tool calls and tool results in OpenAI's shape,
        written for the model's chat template once the model is known (tool_calls.for_template)."""
        text = "" if self.content is None else (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content))
        if self.tool_calls:
            return {"role": "assistant", "content": text, "tool_calls": [c.model_dump() for c in self.tool_calls]}
        if self.role == "tool":
            return {"role": "tool", "content": text, "tool_call_id": self.tool_call_id}
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    json_schema: Optional[dict] = Field(None, alias="schema", description="Omitted: any JSON object.")
    strict: Optional[bool] = Field(None, description="false: unsupported keywords are dropped, not refused.")


class ResponseFormat(BaseModel):
    """`text`, `json_object` (any JSON object) or `json_schema` (an answer valid under the schema):
    decoding is constrained by a grammar (GGUF models)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only then")
        return self

    def grammar(self) -> Optional[str]:
        from serve_app.structured_output import json_object_grammar, schema_grammar

        if self.type == "text":
            return None
        if self.type == "json_object":
            return json_object_grammar()
        spec = self.json_schema
        return schema_grammar(spec.json_schema or {"type": "object"}, strict=spec.strict is not False)


class SamplingFields(BaseModel):
    """Sampling parameters; each API family sets its own defaults in a subclass.

    Requests are strict, as their schema says: `true` is not an integer, `"5"` not a number."""

    model_config = ConfigDict(strict=True)

    max_tokens: Optional[PositiveInt] = Field(None, description="Most tokens to generate.")
    temperature: float = Field(0.8, ge=0, le=2, description="0 means greedy.")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: Int = Field(40, ge=0, le=2**31 - 1, description="0 disables top-k.")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 stop strings.",
                                                  json_schema_extra=schema_limits(maxItems=MAX_STOP_SEQUENCES))
    seed: Optional[Int] = Field(None, description="Makes sampling repeatable (any integer; engines use it modulo 2^64).")
    repeat_penalty: float = Field(1.1, gt=0, le=10)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    ignore_eos: bool = Field(False, description="Extension (as in vLLM and llama.cpp): end-of-sequence tokens are never sampled, so generation runs to max_tokens (or a stop string).")
    response_format: Optional[ResponseFormat] = Field(None, description="JSON mode or a JSON schema the answer "
                                                      "must follow (GGUF models; others answer 400).")
    logit_bias: Optional[dict[TokenId, Bias]] = Field(
        None, max_length=300, json_schema_extra={"additionalProperties": False},
        description="Token id (as a string) to a bias from -100 to 100 added to its logit; at most 300. "
        "Each id must exist in the model's vocabulary.")
    priority: Optional[Literal["interactive", "batch"]] = Field(
        None, description="Extension: `batch` work waits behind interactive requests and never takes the slots "
        "kept for them. Default: `interactive` (`batch` for /api/v1/generate/batch items).",
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError("at most 4 stop sequences")
        return value

    def to_sampling_params(self) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=stop,
            seed=None if self.seed is None else self.seed % 2**64,  # numpy and torch take no negative or huge seed
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            ignore_eos=self.ignore_eos,
            grammar=self.response_format.grammar() if self.response_format is not None else None,
            logit_bias=tuple(sorted((int(t), float(b)) for t, b in (self.logit_bias or {}).items())),
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class ChatTokenFields(BaseModel):
    """OpenAI chat's `max_completion_tokens`, `logprobs` and `top_logprobs`: one definition for
    `/v1/chat/completions` and every `/api/v1` request (HTTP, WebSocket, batch items). Mixed in
    before the class with `to_sampling_params`, which it extends."""

    model_config = ConfigDict(strict=True)

    max_completion_tokens: Optional[PositiveInt] = Field(
        None, description="OpenAI's newer name of `max_tokens`; `max_tokens` wins when both are given.")
    logprobs: Optional[bool] = Field(None, description="Return each token's log probability (GGUF models).")
    top_logprobs: Optional[Annotated[int, Field(ge=0, le=20), BeforeValidator(integral)]] = Field(
        None, description="Alternatives per token (0 to 20); needs logprobs.")

    @field_validator("top_logprobs")
    @classmethod
    def _alternatives_need_logprobs(cls, value, info):
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def to_sampling_params(self) -> SamplingParams:
        params = super().to_sampling_params()
        if self.max_completion_tokens is not None and self.max_tokens is None:
            params = replace(params, max_tokens=self.max_completion_tokens)
        if self.logprobs:
            params = replace(params, logprobs=self.top_logprobs or 0)
        return params


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """OpenAI's chat `logprobs`: the shape of every channel that returns log probabilities."""

    content: Optional[list[TokenLogprob]]
    refusal: None = None
