"""Migration: export one instance's Redis state, import into an empty one, keys and sessions carry over."""

import asyncio
import json
import subprocess
import sys

import pytest
from starlette.requests import Request

from scripts.serve_process import ROOT
from serve_app.auth import Authenticator
from serve_app.keys import KeyService
from serve_app.protocol.keys import KeyCreate
from serve_app.sessions import SessionStore
from serve_app.store import RedisStore
from tests.integration.redis_process import RedisProcess


@pytest.fixture(scope="module")
def instances():
    old, new = RedisProcess().start(), RedisProcess().start()
    yield old, new
    old.stop(), new.stop()


def _request_with(key: str) -> Request:
    return Request({"type": "http", "headers": [(b"x-api-key", key.encode())], "state": {}})


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve_app.migrate", *args], cwd=ROOT, capture_output=True, text=True)


def test_export_import_keeps_keys_and_sessions(instances, tmp_path):
    old, new = instances
    models = ["smollm2-135m-instruct"]

    async def populate():
        store = RedisStore(old.url)
        created = await KeyService(store, models).create(KeyCreate(name="telegram-bot"))
        await SessionStore(store, 3600).save(created.id, "chat-1", models[0],
                                             [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
        return created

    created = asyncio.run(populate())
    export = tmp_path / "export.json"
    done = _cli("export", "--redis", old.url, "--models", str(ROOT / "models.json"), "-o", str(export))
    assert done.returncode == 0, done.stderr
    data = json.loads(export.read_text())
    assert data["format"] == "aicore-migration" and data["version"] == 1
    assert created.key not in export.read_text()  # only the hash travels

    models_out = tmp_path / "models.json"
    dry = _cli("import", str(export), "--redis", new.url, "--models-out", str(models_out), "--dry-run")
    assert dry.returncode == 0 and json.loads(dry.stdout)["written"] == 0 and not models_out.exists()

    done = _cli("import", str(export), "--redis", new.url, "--models-out", str(models_out))
    assert done.returncode == 0, done.stderr
    assert json.loads(models_out.read_text()) == json.loads((ROOT / "models.json").read_text())

    async def check_new_instance():
        store = RedisStore(new.url)
        auth = Authenticator([], "X-API-Key", KeyService(store, models), store, "closed")
        principal = await auth.authenticate(_request_with(created.key))
        assert principal.key_id == created.id
        session = await SessionStore(store, 3600).load(created.id, "chat-1")
        assert [m["content"] for m in session["messages"]] == ["hi", "hello"]

    asyncio.run(check_new_instance())

    again = _cli("import", str(export), "--redis", new.url, "--models-out", str(models_out))
    assert again.returncode == 2 and "use --force" in again.stderr  # never overwrites silently
    assert _cli("import", str(export), "--redis", new.url, "--models-out", str(models_out), "--force").returncode == 0


def test_import_refuses_foreign_or_newer_files(instances, tmp_path):
    _, new = instances
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "aicore-migration", "version": 99, "entries": []}))
    done = _cli("import", str(bad), "--redis", new.url)
    assert done.returncode == 2 and "version 99" in done.stderr
