"""What every embedding backend shares: a worker thread, length checks, pooling, batching.

A subclass implements `load()` (calling `load_tokenizer()`) and `hidden_states(batch)` (last hidden state for a padded batch); the sentence vector is
the attention-masked mean of the hidden states, scaled to unit length, as
sentence-transformers does for all-MiniLM-L6-v2.

Concurrent requests share forward passes: a `MicroBatcher` gathers them for up to
`batch_window_ms` (models.json) and the worker thread embeds all their inputs together, sorted
by length, `max_batch_size` inputs a pass, then hands each request its own vectors. Padding is
masked out of both attention and pooling, so a vector does not depend on its batch (within
float rounding: tests/engine/test_embedding_batching.py).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import AsyncIterator, Union

import numpy as np

from core.errors import ContextLengthExceeded, InvalidRequest
from core.types import EmbeddingResult, GenerationChunk, GenerationRequest
from deployments.backends.base import Backend, EngineThread
from deployments.backends.microbatch import MicroBatcher


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
        self._batcher: MicroBatcher[list[str], EmbeddingResult] = MicroBatcher(
            self._engine, self.embed_many_blocking, self.config.batch_window_ms / 1000,
            self.config.max_batch_size, size=len,
        )
        self.forward_passes = 0  # hidden_states calls (what micro-batching saves)
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

    def _checked_ids(self, texts: list[str]) -> list[list[int]]:
        ids = self.tokenize(texts)
        limit = self.config.context_length
        for index, row in enumerate(ids):
            if len(row) > limit:
                raise ContextLengthExceeded(
                    f"input[{index}] is {len(row)} tokens; model {self.model_name!r} reads at most {limit}",
                    param="input",
                )
        return ids

    def embed_many_blocking(self, requests: list[list[str]]) -> list[Union[EmbeddingResult, BaseException]]:
        """Several requests' texts in shared forward passes; each request gets its result or its error."""
        answers: list[Union[EmbeddingResult, BaseException]] = []
        rows: list[list[int]] = []  # every valid request's token ids, one after another
        spans: list[tuple[int, int]] = []
        for texts in requests:
            try:
                ids = self._checked_ids(texts)
            except Exception as error:
                answers.append(error)
                spans.append((0, 0))
                continue
            answers.append(EmbeddingResult(vectors=[], prompt_tokens=sum(len(row) for row in ids)))
            spans.append((len(rows), len(rows) + len(ids)))
            rows.extend(ids)
        vectors = self._vectors(rows)
        for answer, (start, end) in zip(answers, spans):
            if isinstance(answer, EmbeddingResult):
                answer.vectors = vectors[start:end]
        return answers

    def _vectors(self, rows: list[list[int]]) -> list[list[float]]:
        # Sorting by length keeps padding (wasted compute) small inside each pass.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        by_index: dict[int, list[float]] = {}
        size = self.config.max_batch_size
        for start in range(0, len(order), size):
            chunk = order[start: start + size]
            input_ids, mask = pad([rows[i] for i in chunk], self.tokenize.pad_id)
            self.forward_passes += 1
            pooled = mean_pool(self.hidden_states(input_ids, mask), mask)
            for i, vector in zip(chunk, pooled):
                by_index[i] = vector.astype(np.float32).tolist()
        return [by_index[i] for i in range(len(rows))]

    def embed_blocking(self, texts: list[str]) -> EmbeddingResult:
        """One request alone, on the calling thread (benchmarks, tests)."""
        (answer,) = self.embed_many_blocking([texts])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def queued(self) -> int:
        return self._engine.waiting + self._batcher.waiting

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        return await self._batcher.submit(texts)

    def unload(self) -> None:
        self._engine.shutdown()
