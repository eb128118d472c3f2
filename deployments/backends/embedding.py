"""What every embedding backend shares: a worker thread, length checks, pooling, batching.

A subclass implements `load()` (calling `load_tokenizer()`) and `hidden_states(batch)` (last hidden state for a padded batch); the sentence vector is
the attention-masked mean of the hidden states, scaled to unit length, as
sentence-transformers does for all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from deployments.backends.base import Backend, EngineThread
from deployments.errors import ContextLengthExceeded, InvalidRequest
from deployments.types import EmbeddingResult, GenerationChunk, GenerationRequest

BATCH_SIZE = 32


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, seq, dim) hidden states and a (batch, seq) mask -> (batch, dim) unit vectors."""
    weights = mask[..., None].astype(hidden.dtype)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def pad(ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token ids; return (input_ids, attention_mask) as int64 arrays."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


class FastTokenizer:
    """A `tokenizer.json` (Hugging Face `tokenizers`, no torch), without its truncation or padding."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path} (set `tokenizer` in models.json)")
        self._tokenizer = Tokenizer.from_file(str(file))
        padding = self._tokenizer.padding
        self.pad_id = padding["pad_id"] if padding else 0
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]


class EmbeddingBackend(Backend):
    """Base of the `task: "embed"` backends. Inference runs on one worker thread per replica."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._engine = EngineThread(f"embed-{self.model_name}")
        self.tokenize: FastTokenizer | None = None

    def load_tokenizer(self) -> None:
        """The tokenizer named by `tokenizer` in models.json, else the one beside the weights."""
        folder = self.weights if self.weights.is_dir() else self.weights.parent
        self.tokenize = FastTokenizer(self.tokenizer_path or folder)

    @abstractmethod
    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Last hidden state, (batch, seq, dim), as float32 numpy."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise InvalidRequest(
            f"model {self.model_name!r} is an embedding model: use /v1/embeddings or /api/v1/embeddings",
            param="model",
        )

    def embed_blocking(self, texts: list[str]) -> EmbeddingResult:
        ids = self.tokenize(texts)
        limit = self.config.context_length
        for index, row in enumerate(ids):
            if len(row) > limit:
                raise ContextLengthExceeded(
                    f"input[{index}] is {len(row)} tokens; model {self.model_name!r} reads at most {limit}",
                    param="input",
                )
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        by_index: dict[int, list[float]] = {}
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start: start + BATCH_SIZE]
            input_ids, mask = pad([ids[i] for i in chunk], self.tokenize.pad_id)
            pooled = mean_pool(self.hidden_states(input_ids, mask), mask)
            for i, vector in zip(chunk, pooled):
                by_index[i] = vector.astype(np.float32).tolist()
        vectors = [by_index[i] for i in range(len(ids))]
        return EmbeddingResult(vectors=vectors, prompt_tokens=sum(len(row) for row in ids))

    @property
    def queued(self) -> int:
        return self._engine.waiting

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        return await asyncio.wrap_future(self._engine.submit(self.embed_blocking, texts))

    def unload(self) -> None:
        self._engine.shutdown()
