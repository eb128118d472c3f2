"""Embeddings from an ONNX encoder (onnxruntime, no torch), e.g. the int8 all-MiniLM-L6-v2.

The graph takes `input_ids`, `attention_mask` and (if it declares it) `token_type_ids`, and
returns the last hidden state first.
"""

from __future__ import annotations

import numpy as np

from deployments.backends.base import register_backend
from deployments.backends.embedding import EmbeddingBackend
from deployments.backends.onnx_runtime import open_session


@register_backend("onnx", task="embed")
class ONNXEmbeddingBackend(EmbeddingBackend):
    def load(self) -> None:
        self.session = open_session(self.weights, self.config)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.load_tokenizer()

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return self.session.run(None, feed)[0].astype(np.float32)
