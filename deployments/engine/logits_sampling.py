"""Choose the next token from logits in numpy, with the same parameters the other backends honour.

Order as in llama.cpp: penalties (repeat, presence, frequency), the request's logit bias, then
temperature, top-k, top-p.
Temperature 0 is greedy.
"""

from __future__ import annotations

import numpy as np

from core.types import SamplingParams


def apply_penalties(logits: np.ndarray, history: list[int], completion: list[int], s: SamplingParams) -> np.ndarray:
    if s.repeat_penalty != 1.0 and history:
        seen = np.unique(np.asarray(history))
        values = logits[seen]
        logits[seen] = np.where(values > 0, values / s.repeat_penalty, values * s.repeat_penalty)
    if (s.presence_penalty or s.frequency_penalty) and completion:
        tokens, counts = np.unique(np.asarray(completion), return_counts=True)
        logits[tokens] -= s.presence_penalty + s.frequency_penalty * counts
    return logits


def choose(logits: np.ndarray, history: list[int], completion: list[int], s: SamplingParams,
           rng: np.random.Generator, banned: tuple[int, ...] = ()) -> int:
    """`logits` is the last position's (vocab,) row; `history` is prompt plus completion."""
    logits = apply_penalties(logits.astype(np.float64, copy=True), history, completion, s)
    for token, bias in s.logit_bias:
        logits[token] += bias
    if banned:
        logits[list(banned)] = -np.inf
    if s.temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.size:
        cutoff = np.partition(logits, -s.top_k)[-s.top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if s.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, s.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))
