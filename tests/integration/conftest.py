"""One real `serve run` for the integration tests: both shipped GGUF models, two ingress replicas."""

import pytest

from scripts.serve_process import ServeProcess

KEY = "test-key-1"
OTHER_KEY = "test-key-2"
MAX_PROMPT_LENGTH = 6000
DEFAULT = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def server(log_dir):
    env = {
        "LOG_DIR": str(log_dir),
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MAX_PROMPT_LENGTH": str(MAX_PROMPT_LENGTH),
        "LOG_FORMAT": "json",
        "INGRESS_REPLICAS": "2",
    }
    process = ServeProcess(env=env).start(ready_models=(DEFAULT, GEMMA))
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
