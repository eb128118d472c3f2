"""llama.cpp sampler chains and token text for the GGUF batching engine (one chain per sequence)."""

from __future__ import annotations

import ctypes
import math
import random

from core.types import SamplingParams

MIN_P = 0.05  # as llama-cpp-python's generate, which served GGUF models before this engine
PENALTY_LAST_N = 64


def token_bytes(lib, vocab, token: int) -> bytes:
    """One token's text. `Llama.detokenize` copies through a 32-byte buffer and drops longer tokens
    (SmolLM2 has whitespace runs of 46 bytes, for code indentation); this grows the buffer instead."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = lib.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n  # llama.cpp answers -(bytes needed) when the buffer is too small


def end_token_bias(lib, vocab, n_vocab: int):
    """A logit bias of -inf for every end-of-generation token, built once per model."""
    ends = [t for t in range(n_vocab) if lib.llama_vocab_is_eog(vocab, t)]
    return (lib.llama_logit_bias * len(ends))(*[lib.llama_logit_bias(t, -math.inf) for t in ends])


def sampler_chain(lib, sampling: SamplingParams, n_vocab: int, end_bias=None):
    """The sampler of one sequence: `ignore_eos` bans the end-of-generation tokens (as llama.cpp's
    server and the padded engine do: never an empty end token in the middle of the text; not under a
    grammar, whose answer ends where the grammar does), the request's logit bias, then
    penalties, then greedy (temperature 0) or top-k, top-p, min-p, temperature and a seeded draw."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lib.llama_sampler_chain_add
    if sampling.ignore_eos and end_bias and not sampling.grammar:  # the sampler copies the bias
        add(chain, lib.llama_sampler_init_logit_bias(n_vocab, len(end_bias), end_bias))
    if sampling.logit_bias:
        bias = (lib.llama_logit_bias * len(sampling.logit_bias))(
            *[lib.llama_logit_bias(token, value) for token, value in sampling.logit_bias])
        add(chain, lib.llama_sampler_init_logit_bias(n_vocab, len(bias), bias))
    add(chain, lib.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, sampling.repeat_penalty,
                                                sampling.frequency_penalty, sampling.presence_penalty))
    if sampling.temperature <= 0:
        add(chain, lib.llama_sampler_init_greedy())
        return chain
    add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
    add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
    add(chain, lib.llama_sampler_init_min_p(MIN_P, 1))
    add(chain, lib.llama_sampler_init_temp(sampling.temperature))
    seed = sampling.seed if sampling.seed is not None else random.randint(0, 2**31 - 1)
    add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
