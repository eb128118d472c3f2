"""Grammar-constrained sampling for the llama.cpp engine, as llama.cpp's own server samples
(and the log probabilities of sampled tokens, read from the same logits).

Each constrained sequence has its sampler chain (penalties, top-k... as free ones) and a grammar
sampler (llama.cpp's GBNF engine). A token is drawn from the chain alone first; if the grammar
accepts it, it is kept (the common case: one grammar check of one token). Else the grammar masks
the whole vocabulary and the chain draws again from what is left. Checking only the drawn token
is what keeps a constrained sequence about as cheap as a free one inside a shared decode step.

The grammar's state advances only with a token it accepted: llama.cpp aborts the process on an
accepted token its grammar cannot take, so a sequence whose grammar admits nothing ends instead.
"""

from __future__ import annotations

import ctypes
import math
from collections import OrderedDict
from typing import Optional

import numpy as np

from core.errors import InvalidRequest

KEEP_COMPILED = 64  # grammars kept parsed per engine; a sequence gets a clone (its own state)


class GrammarSampler:
    def __init__(self, lib, vocab, n_vocab: int):
        self.lib, self.vocab, self.n_vocab = lib, vocab, n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        assert dtype.itemsize == ctypes.sizeof(lib.llama_token_data)
        self._all = np.zeros(n_vocab, dtype)  # one candidate per token: row i is token i until a sampler moves rows
        self._all["id"] = self._ids
        self._moved = False  # the last draw's samplers sorted or cut the rows: ids must be written again
        self._one = np.zeros(1, dtype)
        self._compiled: OrderedDict[str, object] = OrderedDict()

    def new(self, grammar: str):
        """A grammar sampler in its start state (the parsed grammar is cached)."""
        parsed = self._compiled.get(grammar)
        if parsed is None:
            parsed = self.lib.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
            if not parsed:
                raise InvalidRequest("the grammar could not be parsed", param="response_format")
            self._compiled[grammar] = parsed
            while len(self._compiled) > KEEP_COMPILED:
                self.lib.llama_sampler_free(self._compiled.popitem(last=False)[1])
        self._compiled.move_to_end(grammar)
        return self.lib.llama_sampler_clone(parsed)

    def _candidates(self, rows: np.ndarray, size: int):
        return self.lib.llama_token_data_array(
            data=rows.ctypes.data_as(ctypes.POINTER(self.lib.llama_token_data)), size=size, selected=-1, sorted=False)

    def _draw(self, ctx, index: int, chain, grammar=None) -> int:
        lib = self.lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        rows = self._all
        if self._moved:
            rows["id"] = self._ids
        rows["logit"], rows["p"] = logits, 0.0
        candidates = self._candidates(rows, self.n_vocab)
        if grammar is not None:
            lib.llama_sampler_apply(grammar, ctypes.byref(candidates))
        lib.llama_sampler_apply(chain, ctypes.byref(candidates))
        # Of the samplers the engine's chains use, those that move rows (top-k, top-p, min-p) set
        # `sorted` or shrink `size`; bias, penalties, temperature, greedy, dist and grammar only write
        # values. (typical-p reorders without either: a chain that adds it must refill every draw.)
        self._moved = bool(candidates.sorted) or candidates.size != self.n_vocab
        if candidates.selected < 0:
            return -1
        return int(candidates.data[candidates.selected].id)

    def accepts(self, grammar, token: int) -> bool:
        one = self._one
        one["id"], one["logit"], one["p"] = token, 1.0, 0.0
        candidates = self._candidates(one, 1)
        self.lib.llama_sampler_apply(grammar, ctypes.byref(candidates))
        return not math.isinf(float(one["logit"][0]))

    def sample(self, ctx, index: int, chain, grammar) -> Optional[int]:
        """The next token of a constrained sequence, accepted by its chain and grammar; None when the
        grammar admits no token (the sequence must end)."""
        token = self._draw(ctx, index, chain)
        if token < 0 or not self.accepts(grammar, token):
            token = self._draw(ctx, index, chain, grammar)
            if token < 0 or not self.accepts(grammar, token):
                return None
        self.lib.llama_sampler_accept(grammar, token)
        self.lib.llama_sampler_accept(chain, token)
        return token

    def logprobs(self, ctx, index: int, token: int, top: int, piece) -> tuple:
        """`token`'s log probability over the whole vocabulary (the model's own distribution, before
        penalties, bias and truncation, as llama.cpp's server reports it) and the `top` most likely."""
        row = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        peak = float(row.max())
        log_total = peak + math.log(float(np.exp(row - peak, dtype=np.float64).sum()))
        best = ()
        if top:
            ids = np.argpartition(-row, top)[:top]
            best = tuple((piece(int(t)), float(row[t]) - log_total) for t in ids[np.argsort(-row[ids])])
        return piece(token), float(row[token]) - log_total, best

    def free(self) -> None:
        for parsed in self._compiled.values():
            self.lib.llama_sampler_free(parsed)
        self._compiled.clear()
