"""The spec's settings take effect where the builder and the app read them (no Ray cluster here;
tests/integration/test_spec_settings.py runs them through a real `serve run`)."""

import asyncio
import json
import logging
import shutil
import subprocess
import time

import httpx
import pytest
import redis
import yaml

from core.errors import AICoreError, ModelUnavailable, StoreUnavailable
from core.settings import Settings
from scripts.serve_process import free_port
from serve_app.builder import build_app
from serve_app.http.errors import error_response
from serve_app.state.store import RedisStore
from tests.conftest import ROOT

SMOLLM = "smollm2-135m-instruct"


def _one_model_file(folder, name="env-model"):
    shipped = json.loads((ROOT / "models.json").read_text())["models"][SMOLLM]
    path = folder / "models.json"
    path.write_text(json.dumps({"models": {name: shipped}}))
    return path


def _ingress(app):
    """The ingress deployment and the (named) options it is bound with."""
    deployment = app._bound_deployment  # a Deployment with its bound arguments
    return deployment, deployment.init_kwargs


def _shipped_args() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0].get("args") or {}


def test_shipped_serve_config_leaves_model_config_path_to_the_environment(monkeypatch):
    assert "model_config_path" not in _shipped_args()
    monkeypatch.setenv("MODEL_CONFIG_PATH", "configs/models.gguf.json")
    assert Settings(**_shipped_args()).model_config_path == "configs/models.gguf.json"
    monkeypatch.delenv("MODEL_CONFIG_PATH")
    assert Settings(**_shipped_args()).model_config_path == "models.json"


def test_args_name_a_file_explicitly_and_win(monkeypatch):
    monkeypatch.setenv("MODEL_CONFIG_PATH", "configs/models.gguf.json")
    assert Settings(model_config_path="other.json").model_config_path == "other.json"


def test_builder_serves_the_file_model_config_path_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(_one_model_file(tmp_path)))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    _, init_args = _ingress(build_app(_shipped_args()))
    settings, specs = init_args["settings"], init_args["models"]
    assert list(specs) == ["env-model"] and settings.model_config_path.endswith("models.json")


def test_gguf_only_command_serves_the_gguf_file(monkeypatch):
    monkeypatch.setenv("MODEL_CONFIG_PATH", "configs/models.gguf.json")
    assert Settings(**_shipped_args()).resolve(Settings().model_config_path) == ROOT / "configs" / "models.gguf.json"


@pytest.mark.parametrize("env,replicas", [({"API_WORKERS": "3"}, 3), ({"INGRESS_REPLICAS": "2"}, 2),
                                          ({"API_WORKERS": "3", "INGRESS_REPLICAS": "2"}, 2), ({}, 1)])
def test_api_workers_is_the_number_of_ingress_replicas(tmp_path, monkeypatch, env, replicas):
    for name in ("API_WORKERS", "INGRESS_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")  # several replicas need it (nothing connects here)
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(_one_model_file(tmp_path)))
    deployment, init_args = _ingress(build_app({}))
    assert deployment.num_replicas == replicas and init_args["settings"].ingress_replicas == replicas


@pytest.mark.parametrize("env", [{"INGRESS_REPLICAS": "2"}, {"API_WORKERS": "3"}])
def test_several_ingress_replicas_without_redis_refuse_to_start(tmp_path, monkeypatch, env):
    """Each replica would keep its own keys and limits (a limit multiplied by the replicas)."""
    for name in ("API_WORKERS", "INGRESS_REPLICAS", "REDIS_URL", "ALLOW_REPLICAS_WITHOUT_REDIS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(_one_model_file(tmp_path)))
    with pytest.raises(ValueError, match="needs REDIS_URL") as refused:
        build_app({})
    assert "INGRESS_REPLICAS=1" in str(refused.value)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert _ingress(build_app({}))[0].num_replicas > 1
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("ALLOW_REPLICAS_WITHOUT_REDIS", "true")  # explicitly, for a test server with bootstrap keys
    assert _ingress(build_app({}))[0].num_replicas > 1


def test_debug_turns_on_debug_logs_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("MODEL_CONFIG_PATH", str(_one_model_file(tmp_path)))
    assert Settings().log_level == "DEBUG" and Settings(debug=False).log_level == "INFO"
    try:
        _, init_args = _ingress(build_app({}))
        context = init_args["context"]  # the ReplicaContext model replicas configure their logging from
        assert logging.getLogger("aicore").level == logging.DEBUG and context.log_level == "DEBUG"
    finally:
        logging.getLogger("aicore").setLevel(logging.INFO)


def _raise(exc):
    try:
        raise exc
    except BaseException as raised:
        return raised


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _errors_logged(level, *exceptions):
    """Map each exception to a response with the `aicore` loggers at `level`; the records logged."""
    logger, handler = logging.getLogger("aicore"), _Records()
    before = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        responses = [error_response(_raise(exc)) for exc in exceptions]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    return responses, handler.records


def test_debug_logs_tracebacks_but_responses_carry_none():
    (engine, unavailable, unhandled), records = _errors_logged(
        logging.DEBUG, AICoreError("engine blew up: /srv/secret/path"),
        ModelUnavailable("model 'm' did not start answering"), RuntimeError("internal detail xyz"))
    traces = [r for r in records if r.exc_info]
    assert len(traces) == 3  # two at DEBUG (mapped 5xx), the unhandled one at ERROR
    assert sorted(r.levelname for r in traces) == ["DEBUG", "DEBUG", "ERROR"]
    body = unhandled.body.decode()
    assert unhandled.status_code == 500 and "xyz" not in body and "Traceback" not in body
    for response in (engine, unavailable):
        assert "Traceback" not in response.body.decode()


def test_without_debug_no_debug_records():
    _, records = _errors_logged(logging.INFO, ModelUnavailable("not now"))
    assert not [r for r in records if r.levelname == "DEBUG"]


@pytest.fixture(scope="module")
def password_redis():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/test.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--requirepass", "pw-123"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password="pw-123")
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_redis_password_is_used_with_redis_url(password_redis, monkeypatch):
    async def roundtrip(store):
        try:
            await store.set("spec:probe", "1")
            return await store.get("spec:probe")
        finally:
            await store.client.aclose()

    monkeypatch.setenv("REDIS_URL", password_redis + "/0")
    monkeypatch.setenv("REDIS_PASSWORD", "pw-123")
    settings = Settings()
    assert asyncio.run(roundtrip(RedisStore(settings.redis_url, password=settings.redis_password))) == "1"
    with pytest.raises(StoreUnavailable):
        asyncio.run(roundtrip(RedisStore(settings.redis_url)))  # the same URL without the password
    wrong_in_url = password_redis.replace("redis://", "redis://:other@") + "/0"
    with pytest.raises(StoreUnavailable):  # a password in the URL wins over REDIS_PASSWORD
        asyncio.run(roundtrip(RedisStore(wrong_in_url, password="pw-123")))


def test_app_uses_redis_password_and_a_separate_cache_redis(password_redis):
    from deployments.config import load_models_file
    from serve_app.app import create_app
    from serve_app.model_router import ModelEntry, ModelRouter
    from tests.unit.serve_app.test_auth_asgi import _Status

    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, None) for n, c in models.items()}, SMOLLM)

    settings = Settings(api_keys="k", allow_short_api_keys=True, redis_url=password_redis + "/0", cache_redis_url=password_redis + "/1",
                        redis_password="pw-123")
    app = create_app(settings, router, None, _Status())

    async def scenario():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            made = await client.post("/api/v1/keys", headers={"X-API-Key": "k"}, json={"name": "n"})
            assert made.status_code == 201, made.text
        cache_store = app.state.generation.cache.store
        assert cache_store is not app.state.store
        assert cache_store.client.connection_pool.connection_kwargs["db"] == 1
        assert await cache_store.ping()

    asyncio.run(scenario())
    state = redis.Redis.from_url(password_redis + "/0", password="pw-123")
    assert list(state.scan_iter("aicore:key:*"))
