"""Fields both API families share: chat messages and sampling parameters."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from core.types import SamplingParams


SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_STOP_SEQUENCES = 4


def _integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer: read it as 3 (strict models still refuse true and "3")."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]  # the integer of request models
# The bound inside the validator, so that the schema says `minimum` (pydantic writes a bare `ge` otherwise).
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_integral)]


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


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str = Field(json_schema_extra=PROMPT_LIMITS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart]] = Field(
        description="Text, or a list of text parts. All messages together: at most MAX_PROMPT_LENGTH characters "
        "(413 prompt_too_long).", json_schema_extra=PROMPT_LIMITS,
    )

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


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
        )
