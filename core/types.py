"""What crosses a Ray handle between the ingress and a model replica.

Small picklable dataclasses only: never a Starlette request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class SamplingParams:
    # Resolved once, at the ingress: the client's max_tokens, else the model's default_max_tokens
    # with `fit_max_tokens` set (a default is cut to the room the prompt leaves; an asked number
    # that does not fit is refused). None (an engine driven directly): up to the context's end.
    max_tokens: Optional[int] = None
    fit_max_tokens: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    # A llama.cpp grammar (GBNF) the answer must follow (structured output, tool calls); engines
    # that cannot constrain are never sent one (the ingress refuses the request).
    grammar: Optional[str] = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    logprobs: Optional[int] = None  # return each token's log probability and this many alternatives


@dataclass(frozen=True)
class GenerationRequest:
    """Either `prompt` (plain completion) or `messages` (chat) is set."""

    request_id: str
    sampling: SamplingParams
    prompt: Optional[str] = None
    messages: Optional[tuple[dict, ...]] = None
    key_id: Optional[str] = None
    adapter: Optional[str] = None  # a LoRA adapter of the model (`"model": "<model>:<adapter>"`)
    priority: str = "interactive"  # or "batch": waits behind interactive work, never takes the reserved slots
    # Whose cached prompt KV this request may reuse: its key's own (the key id), or "shared" when
    # the operator chose so (PREFIX_CACHE_SCOPE). Reuse across keys is a timing side channel.
    cache_scope: Optional[str] = None
    # The server-side session this turn belongs to ("<owner>/<session id>"): the engine tags the
    # conversation's kept KV with it, so that deleting the session drops that KV (forget_conversation).
    conversation: Optional[str] = None
    # The tools, for a chat template that renders them itself (OpenAI's shape, as transformers'
    # apply_chat_template(tools=...) takes them); None: any tools are described in the messages.
    tools: Optional[tuple[dict, ...]] = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# One generated token's log probability (natural log, over the whole vocabulary before sampling):
# (its bytes, logprob, ((an alternative's bytes, logprob), ...) most likely first).
TokenLogprob = tuple[bytes, float, tuple[tuple[bytes, float], ...]]


@dataclass
class GenerationChunk:
    """One piece of a stream. The last chunk has `finish_reason` and `usage` set."""

    text: str = ""
    finish_reason: Optional[str] = None
    usage: Optional[Usage] = None
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens generated since the last chunk, when asked for


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    usage: Usage = field(default_factory=Usage)
    first_token_s: Optional[float] = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass
class EmbeddingResult:
    """Unit-length vectors, one per input, and the tokens the model read."""

    vectors: list[list[float]]
    prompt_tokens: int
