"""One real `serve run` for the integration tests: both shipped GGUF models, two ingress replicas."""

import os

import pytest

from scripts.serve_process import ServeProcess

KEY = "test-key-1"
OTHER_KEY = "test-key-2"
MAX_PROMPT_LENGTH = 6000
DEFAULT = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
ALLOWED_ORIGIN = "http://chat.example"
TELEGRAM_SECRET = "tg-secret-0123456789"
TELEGRAM_BOT = "aicore_test_bot"
BATCH_MAX_ITEMS = 4


def server_env() -> dict:
    return {
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MAX_PROMPT_LENGTH": str(MAX_PROMPT_LENGTH),
        "LOG_FORMAT": "json",
        "INGRESS_REPLICAS": "2",
        "CORS_ORIGINS": ALLOWED_ORIGIN,
        "BATCH_MAX_ITEMS": str(BATCH_MAX_ITEMS),
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "TELEGRAM_API_KEY": KEY,
        "TELEGRAM_BOT_USERNAME": TELEGRAM_BOT,
        "TELEGRAM_MAX_TOKENS": "16",
    }


@pytest.fixture(scope="session")
def server():
    process = ServeProcess(env=server_env()).start(ready_models=(DEFAULT, GEMMA))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def base_url(request):
    # AICORE_TEST_BASE_URL: a server you started yourself with server_env() (quicker while iterating).
    external = os.environ.get("AICORE_TEST_BASE_URL")
    return external.rstrip("/") if external else request.getfixturevalue("server").base_url


@pytest.fixture
def client(base_url):
    import httpx

    with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}, timeout=120) as c:
        yield c
