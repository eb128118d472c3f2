"""ONNX causal LMs through onnxruntime: a decoder exported with past key/values
(`scripts/convert_to_onnx.py`), so each new token costs one step over one token.

Served by `PaddedBatchEngine` (continuous batching, see deployments/engine/padded_engine.py): the
graph's batch dimension holds every running sequence, left-padded, with the padding masked.
A graph without past key/values inputs (logits only) is served too, one sequence at a time, and
it recomputes the whole prefix for every token: that is logged at load. `quantization: "int8"`
quantizes the graph's weights dynamically at load (onnxruntime), cached in MODEL_CACHE_DIR and
reused. The tokenizer (and its chat template) comes from the model folder through transformers,
which needs no torch for that.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from deployments.backends.base import register_backend
from deployments.backends.onnx_runtime import open_session, quantized_copy
from deployments.backends.tensor_text import TensorTextBackend
from deployments.engine.padded_engine import TensorModel

logger = logging.getLogger("aicore.backend.onnx")

PAST_PREFIX = "past_key_values."


class OnnxModel(TensorModel):
    """The engine's view of an exported decoder: the cache maps each past input to (B, heads, W, dim)."""

    def __init__(self, session):
        self.session = session
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = [name for name in self.inputs if name.startswith(PAST_PREFIX)]

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: dict) -> tuple[np.ndarray, dict]:
        feed = {"input_ids": ids}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = mask
        if "position_ids" in self.inputs:
            feed["position_ids"] = positions
        results = self.session.run(None, {**feed, **past})
        return results[0][:, -1], dict(zip(self.past_names, results[1:1 + len(self.past_names)]))

    def prefill(self, ids: list[int]):
        n = len(ids)
        past = {}
        for name in self.past_names:
            shape = self.inputs[name].shape  # (batch, kv_heads, past, head_dim); symbolic dims are strings
            past[name] = np.zeros((1, shape[1], 0, shape[3]), dtype=np.float32)
        logits, cache = self._run(np.asarray([ids], dtype=np.int64), np.ones((1, n), dtype=np.int64),
                                  np.arange(n, dtype=np.int64)[None], past)
        return logits[0], cache if self.past_names else list(ids)

    def decode(self, cache, tokens: np.ndarray, positions: np.ndarray, mask: np.ndarray):
        if not self.past_names:  # logits only: the whole prefix again (one sequence: parallel is 1)
            ids = cache + [int(tokens[0])]
            logits, _ = self._run(np.asarray([ids], dtype=np.int64), mask, np.arange(len(ids), dtype=np.int64)[None], {})
            return logits, ids
        return self._run(tokens[:, None], mask, positions[:, None], cache)

    def join(self, cache, width: int, row, row_width: int):
        if cache is None:
            return row
        wider = max(width, row_width)

        def padded(array: np.ndarray, pad: int) -> np.ndarray:
            return np.pad(array, ((0, 0), (0, 0), (pad, 0), (0, 0))) if pad else array

        return {name: np.concatenate([padded(cache[name], wider - width), padded(row[name], wider - row_width)])
                for name in cache}

    def keep(self, cache, rows: list[int], drop: int):
        return {name: np.ascontiguousarray(array[rows, :, drop:]) for name, array in cache.items()}

    def kv_bytes_per_token(self) -> Optional[int]:
        total = 0
        for name in self.past_names:
            _, heads, _, dim = self.inputs[name].shape
            if not isinstance(heads, int) or not isinstance(dim, int):
                return None
            total += heads * dim * 4  # float32
        return total


@register_backend("onnx")
class ONNXBackend(TensorTextBackend):
    def load(self) -> None:
        from transformers import AutoTokenizer

        folder = self.weights if self.weights.is_dir() else self.weights.parent
        graph = folder / "model.onnx" if self.weights.is_dir() else self.weights
        if self.config.quantization == "int8":
            graph = quantized_copy(graph, self.cache_dir or folder)
        elif self.config.quantization:
            raise ValueError(f"quantization {self.config.quantization!r} is not supported by ONNX models (use int8)")
        model = OnnxModel(open_session(graph, self.config))
        if not model.past_names:
            logger.warning("ONNX graph has no past key/values: every token recomputes the whole prefix",
                           extra={"model": self.model_name})
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path or folder))
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        self.start_engine(model, model.kv_bytes_per_token(), batchable=bool(model.past_names))
