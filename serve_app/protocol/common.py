"""Fields both API families share: chat messages and sampling parameters."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.types import SamplingParams


SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart]] = Field(description="Text, or a list of text parts.")

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class SamplingFields(BaseModel):
    """Sampling parameters; each API family sets its own defaults in a subclass."""

    max_tokens: Optional[int] = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float = Field(0.8, ge=0, le=2, description="0 means greedy.")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0, description="0 disables top-k.")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 stop strings.")
    seed: Optional[int] = Field(None, description="Makes sampling repeatable.")
    repeat_penalty: float = Field(1.1, gt=0, le=10)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    ignore_eos: bool = Field(False, description="Extension (as in vLLM): keep generating past end-of-sequence.")
    priority: Optional[Literal["interactive", "batch"]] = Field(
        None, description="Extension: `batch` work waits behind interactive requests and never takes the slots "
        "kept for them. Default: `interactive` (`batch` for /api/v1/generate/batch items).",
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and len(value) > 4:
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
            seed=self.seed,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            ignore_eos=self.ignore_eos,
        )
