"""One request inside the batching engine, and one sequence slot of the llama.cpp context."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from core.types import GenerationChunk, SamplingParams, Usage
from deployments.engine.text import StopMatcher


# What the engine hands a request's consumer: a chunk, an exception (the request failed), or None (the end).
# `Outlet.put` runs on the consumer's event loop; the engine gathers a step's items per loop and
# posts them with one call_soon_threadsafe, so 16 streams cost the loop one wake-up a step, not 16.
@dataclass(frozen=True)
class Outlet:
    loop: Any  # asyncio.AbstractEventLoop
    put: Callable[[object], None]


@dataclass(eq=False)
class Sequence:
    """A request from admission to its last chunk. Engine-thread state except `cancelled`,
    which the consumer's event loop sets when its client goes away."""

    request_id: str
    prompt: list[int]
    budget: int  # completion tokens allowed
    sampling: SamplingParams
    stops: list[str]
    adapter: Optional[str]
    priority: str
    outlet: Outlet
    cancelled: bool = False
    tenant: str = "-"  # the caller's key: the waiting room takes turns between tenants
    cache_scope: Optional[str] = None  # a slot's cached prefix is reused only within the same scope
    conversation: Optional[str] = None  # its server-side session (`GenerationRequest.conversation`)
    # Set once the engine runs it:
    slot: Optional["Slot"] = None
    admitted_at: float = 0.0
    fed: int = 0  # prompt tokens whose KV is in the slot (a reused prefix included)
    produced: int = 0
    pending: Optional[int] = None  # the last sampled token, fed at the next step
    sampler: object = None  # llama_sampler_p
    grammar: object = None  # llama_sampler_p of its grammar (constrained sequences only)
    finished: bool = False
    # (another running sequence, n): its first n prompt tokens are this prompt's too; this one waits
    # for them to be computed there and copies them instead of prefilling them itself.
    follows: Optional[tuple["Sequence", int]] = None

    def __post_init__(self) -> None:
        self.outbox: list[object] = []  # items for the consumer, posted by the engine after each step
        self.token_logprobs: list = []  # of tokens not yet handed out (sampling.logprobs set)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._matcher = StopMatcher(self.stops)

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt)

    def text_of(self, piece: bytes) -> tuple[str, bool]:
        """New text safe to send for one token's bytes, and whether a stop string was reached."""
        return self._matcher.feed(self._decoder.decode(piece))

    def final_text(self) -> str:
        """Text held back (an unfinished UTF-8 character, a possible stop string) when generation ends."""
        text, stopped = self._matcher.feed(self._decoder.decode(b"", final=True))
        return text if stopped else text + self._matcher.flush()

    def emit(self, text: str) -> None:
        if text:  # log probabilities travel with the text they produced (or with the final chunk)
            self.outbox.append(GenerationChunk(text=text, logprobs=self._take_logprobs()))

    def _take_logprobs(self) -> tuple:
        taken, self.token_logprobs = tuple(self.token_logprobs), []
        return taken

    def finish(self, reason: str, rest: str = "") -> None:
        self.emit(rest)
        self.outbox.append(GenerationChunk(finish_reason=reason, usage=Usage(len(self.prompt), self.produced),
                                           logprobs=self._take_logprobs()))
        self.outbox.append(None)
        self.finished = True

    def fail(self, error: BaseException) -> None:
        self.outbox.append(error)
        self.outbox.append(None)
        self.finished = True


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id. `cached` are the tokens whose KV its cells hold, computed with
    `adapter`: a new request sharing a prefix with them prefills only the rest."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    adapter: Optional[str] = None
    cache_scope: Optional[str] = None  # of the request that computed `cached`
    conversation: Optional[str] = None  # the server-side session whose turn computed `cached`
    last_used: float = 0.0
    sequence: Optional[Sequence] = None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
