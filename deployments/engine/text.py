"""Text helpers shared by backends: the completion-token budget, stop sequences with hold-back."""

from __future__ import annotations

from typing import Callable

from core.errors import ContextLengthExceeded, InvalidRequest
from core.types import SamplingParams


def token_budget(model: str, n_ctx: int, prompt_len: int, sampling: SamplingParams, param: str) -> int:
    """Completion tokens allowed: the request's resolved `max_tokens` within the room the prompt
    leaves (a default is cut to it, an asked number must fit); none: the whole room."""
    if prompt_len >= n_ctx:
        raise ContextLengthExceeded(
            f"the prompt is {prompt_len} tokens; model {model!r} has a context of {n_ctx}", param=param
        )
    room = n_ctx - prompt_len
    requested = sampling.max_tokens
    if requested is None or sampling.fit_max_tokens:
        return room if requested is None else min(requested, room)
    if requested > room:
        raise ContextLengthExceeded(
            f"max_tokens {requested} plus the prompt's {prompt_len} tokens exceeds "
            f"model {model!r}'s context of {n_ctx}",
            param="max_tokens",
        )
    return requested


def check_logit_bias(bias: tuple[tuple[int, float], ...], n_vocab: int, model: str) -> None:
    """A biased token id must exist in the model's vocabulary (llama.cpp would read past its end)."""
    for token, _ in bias:
        if token >= n_vocab:
            raise InvalidRequest(f"logit_bias names token {token}; model {model!r} has {n_vocab} tokens",
                                 param="logit_bias")


class StopMatcher:
    """Feeds decoded text and releases only what cannot be the start of a stop string.

    `feed(text)` returns (text safe to emit, stopped). Once stopped, the text before
    the stop string has been emitted and nothing after it.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buffer = self._pending + text
        hits = [buffer.find(s) for s in self.stops if s in buffer]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        self._pending = buffer[len(buffer) - hold:] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """Text held back when generation ended without a stop string."""
        rest, self._pending = self._pending, ""
        return rest


class TokenText:
    """Text of generated token ids, for tokenizers that decode whole sequences (Hugging Face).

    `push(token)` returns the new text that is safe to send: nothing while the ids end inside a
    UTF-8 character, and nothing a stop string could still claim. `stopped` turns true at a stop
    string; `finish()` releases what was held back when generation ends another way.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops):
        self._decode = decode
        self._matcher = StopMatcher(list(stops))
        self._sent = ""
        self.produced: list[int] = []
        self.stopped = False

    def push(self, token: int) -> str:
        self.produced.append(token)
        text = self._decode(self.produced)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the next token
            return ""
        piece, self.stopped = self._matcher.feed(text[len(self._sent):])
        self._sent = text
        return piece

    def finish(self) -> str:
        if self.stopped:
            return ""
        piece, self.stopped = self._matcher.feed(self._decode(self.produced)[len(self._sent):])
        return piece if self.stopped else piece + self._matcher.flush()
