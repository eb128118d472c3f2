"""ONNX causal LMs through onnxruntime: a decoder exported with past key/values
(`scripts/convert_to_onnx.py`), so each new token costs one step over one token.

A graph without past key/values inputs (logits only) is served too, but it recomputes the
whole prefix for every token: that is logged at load. `quantization: "int8"` quantizes the
graph's weights dynamically at load (onnxruntime), cached in MODEL_CACHE_DIR and reused.
The tokenizer (and its chat template) comes from the model folder through transformers,
which needs no torch for that.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Iterator

import numpy as np

from deployments.backends.base import ThreadedBackend, register_backend
from deployments.backends.onnx_runtime import open_session, quantized_copy
from deployments.backends.sampling import choose
from deployments.backends.text import TokenText, token_budget
from deployments.errors import InvalidRequest
from deployments.types import GenerationChunk, GenerationRequest, Usage

logger = logging.getLogger("aicore.backend.onnx")

PAST_PREFIX = "past_key_values."


@register_backend("onnx")
class ONNXBackend(ThreadedBackend):
    def load(self) -> None:
        from transformers import AutoTokenizer

        folder = self.weights if self.weights.is_dir() else self.weights.parent
        graph = folder / "model.onnx" if self.weights.is_dir() else self.weights
        if self.config.quantization == "int8":
            graph = quantized_copy(graph, self.cache_dir or folder)
        elif self.config.quantization:
            raise ValueError(f"quantization {self.config.quantization!r} is not supported by ONNX models (use int8)")
        self.session = open_session(graph, self.config)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.past_names = [name for name in self.inputs if name.startswith(PAST_PREFIX)]
        if not self.past_names:
            logger.warning("ONNX graph has no past key/values: every token recomputes the whole prefix",
                           extra={"model": self.model_name})
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path or folder))
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()

    def _empty_past(self) -> dict[str, np.ndarray]:
        past = {}
        for name in self.past_names:
            shape = self.inputs[name].shape  # (batch, kv_heads, past, head_dim); symbolic dims are strings
            past[name] = np.zeros((1, shape[1], 0, shape[3]), dtype=np.float32)
        return past

    def _step(self, new: list[int], total: int, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Run the graph on the `new` tokens after `total - len(new)` cached ones; return last logits."""
        start = total - len(new)
        feed = {"input_ids": np.asarray([new], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(start, total, dtype=np.int64)[None]
        results = self.session.run(None, {**feed, **past})
        presents = dict(zip(self.past_names, results[1:1 + len(self.past_names)]))
        return results[0][0, -1], presents

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is None:
            return self.tokenizer(request.prompt or "").input_ids
        if not self.tokenizer.chat_template:
            raise InvalidRequest(f"model {self.model_name!r} has no chat template: use completions", param="messages")
        text = self.tokenizer.apply_chat_template([dict(m) for m in request.messages], tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def generate_blocking(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationChunk]:
        ids = self.prompt_ids(request)
        s = request.sampling
        budget = token_budget(self.model_name, self.config.context_length, self.config.default_max_tokens, len(ids),
                              s.max_tokens, "prompt" if request.messages is None else "messages")
        rng = np.random.default_rng(s.seed if s.seed is not None else random.randint(0, 2**31 - 1))
        banned = tuple(self.eos_ids) if s.ignore_eos else ()
        out = TokenText(lambda t: self.tokenizer.decode(t, skip_special_tokens=True), s.stop)
        produced = out.produced
        finish = "length"
        logits, past = self._step(ids, len(ids), self._empty_past())
        while True:
            if cancel.is_set():
                self.note_cancelled(len(produced))
                return
            token = choose(logits, ids + produced, produced, s, rng, banned)
            if token in self.eos_ids and not s.ignore_eos:
                finish = "stop"
                break
            piece = out.push(token)
            if piece:
                yield GenerationChunk(text=piece)
            if out.stopped:
                finish = "stop"
                break
            if len(produced) >= budget:
                break
            total = len(ids) + len(produced)
            if self.past_names:
                logits, past = self._step([token], total, past)
            else:  # logits-only graph: the whole prefix again
                logits, _ = self._step(ids + produced, total, {})
        rest = out.finish()
        if rest:
            yield GenerationChunk(text=rest)
        yield GenerationChunk(finish_reason=finish, usage=Usage(len(ids), len(produced)))
