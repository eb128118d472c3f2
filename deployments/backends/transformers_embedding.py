"""Embeddings from a SafeTensors encoder (transformers AutoModel), e.g. all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np

from deployments.backends.base import register_backend
from deployments.backends.embedding import EmbeddingBackend


@register_backend("transformers", task="embed")
class TransformersEmbeddingBackend(EmbeddingBackend):
    def load(self) -> None:
        import torch
        from transformers import AutoModel

        self._torch = torch
        torch.set_num_threads(self.config.threads)
        cuda = self.config.device == "cuda" or (self.config.device == "auto" and torch.cuda.is_available())
        self.device = "cuda" if cuda else "cpu"
        dtype = getattr(torch, self.config.dtype) if self.config.dtype != "auto" else torch.float32
        self.model = AutoModel.from_pretrained(str(self.weights), dtype=dtype).to(self.device).eval()
        self.load_tokenizer()

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
                token_type_ids=torch.zeros_like(torch.from_numpy(input_ids)).to(self.device),
            )
        return out.last_hidden_state.float().cpu().numpy()
