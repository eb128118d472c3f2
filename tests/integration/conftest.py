"""One real `serve run` for the integration tests: the shipped models.json (two GGUF chat models,
two embedding models), two ingress replicas."""

import pytest

from scripts.serve_process import ServeProcess

KEY = "test-key-1"
OTHER_KEY = "test-key-2"
MAX_PROMPT_LENGTH = 6000
DEFAULT = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
MINILM = "minilm-l6-v2"  # SafeTensors, transformers
MINILM_INT8 = "minilm-l6-v2-int8"  # int8 ONNX, onnxruntime
ALL_MODELS = {DEFAULT, GEMMA, MINILM, MINILM_INT8}


@pytest.fixture(scope="session")
def server():
    env = {
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MAX_PROMPT_LENGTH": str(MAX_PROMPT_LENGTH),
        "LOG_FORMAT": "json",
        "INGRESS_REPLICAS": "2",
    }
    process = ServeProcess(env=env).start(ready_models=tuple(ALL_MODELS))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def base_url(server):
    return server.base_url


@pytest.fixture
def client(base_url):
    import httpx

    with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}, timeout=120) as c:
        yield c
