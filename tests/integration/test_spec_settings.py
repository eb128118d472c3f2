"""The spec's settings through a real `serve run` of the shipped serve_config.yaml, from the environment
only (no `args`): MODEL_CONFIG_PATH, API_WORKERS, DEBUG, REDIS_URL with REDIS_PASSWORD, CACHE_REDIS_URL;
and `serve_app.migrate import-legacy` against the same server (an imported key authenticates)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import redis

from scripts.serve_process import ROOT, ServeProcess, free_port

ADMIN = "spec-admin-key-0123456789"
MODEL = "only-smollm"  # a name that exists only in this test's models file
PASSWORD = "spec-redis-password"
LEGACY = ROOT / "examples" / "legacy"


@pytest.fixture(scope="module")
def redis_url():
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no", "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}"  # no password in the URL: REDIS_PASSWORD supplies it
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(redis_url, tmp_path_factory):
    shipped = json.loads((ROOT / "models.json").read_text())["models"]["smollm2-135m-instruct"]
    models = tmp_path_factory.mktemp("spec") / "models.json"
    models.write_text(json.dumps({"models": {MODEL: {**shipped, "context_length": 512, "default_max_tokens": 8}}}))
    logs = tmp_path_factory.mktemp("spec-logs")
    env = {"API_KEYS": ADMIN, "MODEL_CONFIG_PATH": str(models), "API_WORKERS": "2", "DEBUG": "true",
           "REDIS_URL": redis_url + "/0", "CACHE_REDIS_URL": redis_url + "/1", "REDIS_PASSWORD": PASSWORD,
           "LOG_FORMAT": "json", "LOG_DIR": str(logs)}
    process = ServeProcess(env=env).start(ready_models=(MODEL,))  # no args: the shipped serve_config.yaml
    process.models_path, process.log_dir = models, logs
    yield process
    process.stop()


def _get(server, path, key=ADMIN):
    return httpx.get(server.base_url + path, headers={"X-API-Key": key}, timeout=60)


def test_model_config_path_from_the_environment_is_served(server):
    assert [m["id"] for m in _get(server, "/v1/models").json()["data"]] == [MODEL]
    assert _get(server, "/api/v1/health").json()["models"] == {MODEL: "ready"}


def test_api_workers_starts_that_many_ingress_replicas(server):
    """Each ingress replica's access-log lines reach `serve run`'s output with its pid (Ray forwards
    them with a delay, so every request id sent so far is looked for on each pass)."""
    request_ids, pids = set(), set()
    for _ in range(100):
        if len(request_ids) < 40:  # new connections; Serve's proxy spreads them over the replicas
            request_ids.add(_get(server, "/api/v1/models").headers["x-request-id"])
        for line in server.log().splitlines():
            if "ingress pid=" in line and any(rid in line for rid in request_ids):
                pids.add(line.split("ingress pid=")[1].split(")")[0])
        if len(pids) == 2:
            break
        time.sleep(0.2)
    assert len(pids) == 2, pids


def test_redis_password_and_cache_redis(server, redis_url):
    made = httpx.post(server.base_url + "/api/v1/keys", headers={"X-API-Key": ADMIN},
                      json={"name": "spec"}, timeout=60)
    assert made.status_code == 201, made.text  # Redis with a password: stored
    state = redis.Redis.from_url(redis_url + "/0", password=PASSWORD, decode_responses=True)
    assert state.get(f"aicore:key:{made.json()['id']}") is not None
    body = {"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0}
    for expected in ("MISS", "HIT"):
        r = httpx.post(server.base_url + "/api/v1/generate", headers={"X-API-Key": ADMIN}, json=body, timeout=120)
        assert r.status_code == 200 and r.headers["x-cache"] == expected
    cache = redis.Redis.from_url(redis_url + "/1", password=PASSWORD, decode_responses=True)
    assert list(cache.scan_iter("cache:*")) and not list(state.scan_iter("cache:*"))
    assert _get(server, "/api/v1/health/ready").json()["redis"] == "ok"


def test_debug_logs_errors_with_details_in_the_log_only(server):
    r = httpx.post(server.base_url + "/api/v1/generate", headers={"X-API-Key": ADMIN},
                   json={"model": "no-such-model", "prompt": "x"}, timeout=60)
    assert r.status_code == 404 and "Traceback" not in r.text
    request_id = r.headers["x-request-id"]
    for _ in range(50):
        lines = [json.loads(line) for line in (server.log_dir / "aicore.log").read_text().splitlines()
                 if request_id in line]
        if any(entry["level"] == "DEBUG" for entry in lines):
            break
        time.sleep(0.2)
    debug = [entry for entry in lines if entry["level"] == "DEBUG"]
    assert debug and "error answer 404 model_not_found" in debug[0]["message"]


def test_imported_legacy_key_authenticates_with_its_limits_and_history(server, redis_url, tmp_path):
    # The sample names the shipped model; this server calls it MODEL.
    keys = tmp_path / "keys.csv"
    keys.write_text((LEGACY / "keys.csv").read_text().replace("smollm2-135m-instruct", MODEL))
    chats = tmp_path / "chats.jsonl"
    chats.write_text((LEGACY / "chats.jsonl").read_text().replace("smollm2-135m-instruct", MODEL))

    def run(*extra):
        env = {"REDIS_PASSWORD": PASSWORD, "MODEL_CONFIG_PATH": str(server.models_path), "API_KEYS": ADMIN}
        return subprocess.run([sys.executable, "-m", "serve_app.migrate", "import-legacy", "--keys", str(keys),
                               "--history", str(chats), "--redis", redis_url + "/0", *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True)

    dry = run()
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["apply"] is False and report["keys"] == 3 and report["conversations"] == 2
    assert _get(server, "/v1/models", key="sk-legacy-telegram-0001").status_code == 401  # nothing written

    applied = run("--apply")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["keys_written"] == 3 and json.loads(applied.stdout)["sessions_written"] == 2
    state = redis.Redis.from_url(redis_url + "/0", password=PASSWORD, decode_responses=True)
    assert not any("sk-legacy" in (state.get(k) or "") for k in state.scan_iter("aicore:key:*"))  # hashes only

    telegram = "sk-legacy-telegram-0001"  # the same key keeps working, with its limit (2 per minute)
    first = _get(server, "/v1/models", key=telegram)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "2"
    session = _get(server, "/api/v1/sessions/tg-4242", key=telegram).json()  # its second request this minute
    assert [m["content"] for m in session["messages"]] == [
        "You are a helpful assistant.", "My name is Ada.", "Nice to meet you, Ada."]
    assert _get(server, "/v1/models", key=telegram).status_code == 429
    email = _get(server, "/api/v1/sessions/mail-17", key="sk-legacy-email-0002").json()
    assert [m["role"] for m in email["messages"]] == ["user", "assistant"]  # ordered by time
    assert _get(server, "/v1/models", key="sk-legacy-retired-0003").json()["error"]["code"] == "key_disabled"

    again = run("--apply")  # idempotent: what exists is reported and kept
    assert again.returncode == 0 and json.loads(again.stdout)["keys_written"] == 0
