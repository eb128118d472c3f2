"""Migration: export one instance's Redis state, import into an empty one, keys, sessions and
Telegram chats carry over."""

import asyncio
import json
import os
import stat
import subprocess
import sys

import pytest
from starlette.requests import Request

from scripts.serve_process import ROOT
from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.protocol.keys import KeyCreate
from serve_app.state.audit_log import REFUSED, Actor, AuditLog, Query
from serve_app.state.chat_history import ChatHistory
from serve_app.state.sessions import SessionStore
from serve_app.state.store import RedisStore
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
        telegram = ChatHistory(store, ttl_s=3600)
        await telegram.set_model("4211", models[0])
        await telegram.append("4211", [{"role": "user", "content": "ahoy"}, {"role": "assistant", "content": "hi Ann"}])
        await telegram.first_delivery(829301457)  # transient: not exported
        audit = AuditLog.for_store(store)
        await audit.record(Actor("boot-1", "API_KEYS"), "10.0.0.1", "key.create", created.id, status=201,
                           changes={"name": {"before": None, "after": "telegram-bot"}})
        await audit.record(Actor("anonymous"), "10.0.0.9", REFUSED, None, outcome="refused", status=401,
                           route="GET /api/v1/keys", reason="invalid_api_key")
        return created, (await audit.page(Query()))[0]

    created, audit_entries = asyncio.run(populate())
    assert [e["action"] for e in audit_entries] == [REFUSED, "key.create"]
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
        principal = await auth.check(auth.presented(_request_with(created.key)), "127.0.0.1")
        assert principal.key_id == created.id
        session = await SessionStore(store, 3600).load(created.id, "chat-1")
        assert [m["content"] for m in session["messages"]] == ["hi", "hello"]
        chat = await ChatHistory(store).get("4211")  # the bot on the new instance goes on with the chat
        assert chat.model == models[0] and [m["content"] for m in chat.messages] == ["ahoy", "hi Ann"]
        assert 0 < await store.ttl("aicore:telegram:chat:4211") <= 3600  # it still expires when idle
        assert await ChatHistory(store).first_delivery(829301457)  # update ids are not moved
        assert (await AuditLog.for_store(store).page(Query()))[0] == audit_entries  # same ids, times, entries

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


def test_export_file_is_readable_by_its_owner_only(instances, tmp_path):
    old, _ = instances
    export = tmp_path / "private.json"
    previous = os.umask(0o022)  # a umask that would leave a plain write readable by everyone
    try:
        done = _cli("export", "--redis", old.url, "-o", str(export))
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(export.stat().st_mode) == 0o600
        export.chmod(0o644)  # an older, readable export: --force writes it private again
        done = _cli("export", "--redis", old.url, "-o", str(export), "--force")
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(export.stat().st_mode) == 0o600
    finally:
        os.umask(previous)


@pytest.mark.parametrize("entry,complaint", [
    ({"key": "ray:gcs:anything", "type": "string", "value": "x"}, "is not an AI Core key"),
    ({"key": "aicore:cache:abc", "type": "string", "value": "x"}, "is not an AI Core key"),
    ({"key": "aicore:telegram:update:1", "type": "string", "value": "1"}, "is not an AI Core key"),
    ({"key": "aicore:telegram:chat:1", "type": "hash", "value": {}}, "must be a Redis string"),
    ({"key": "aicore:keys", "type": "string", "value": "x"}, "must be a Redis set"),
    ({"key": "aicore:usage:key-1", "type": "string", "value": "x"}, "must be a Redis hash"),
    ({"key": "aicore:key:key-1", "type": "string", "value": {"a": "b"}}, "must be a Redis string"),
    ({"key": "aicore:audit", "type": "stream", "value": [["2-0", {"e": "{}"}], ["1-0", {"e": "{}"}]]},
     "must be a Redis stream"),
    ({"key": "aicore:audit:reload:a:b", "type": "string", "value": "1"}, "is not an AI Core key"),
])
def test_import_refuses_entries_that_are_not_ours(instances, tmp_path, entry, complaint):
    _, new = instances
    good = {"key": "session:key-x:chat-9", "type": "string", "value": "{}", "ttl_ms": None}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps({"format": "aicore-migration", "version": 1, "models": None,
                                "entries": [good, entry]}))
    import redis

    client = redis.Redis.from_url(new.url)
    before = client.dump(entry["key"])  # aicore:keys exists there already (an earlier import)
    done = _cli("import", str(path), "--redis", new.url, "--force")
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    # refused before anything was written, the valid entry included
    assert not client.exists(good["key"]) and client.dump(entry["key"]) == before
