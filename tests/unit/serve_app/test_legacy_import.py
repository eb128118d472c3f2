"""`import-legacy` on the sample dump in examples/legacy, into the in-memory store (the same store
interface as Redis; tests/integration/test_spec_settings.py imports into a real Redis and uses the
keys against a real server)."""

import asyncio
import json

import pytest

from serve_app.access.keys import KeyService, hash_key
from serve_app.legacy_import import LegacyFormatError, import_legacy, parse_history, parse_keys
from serve_app.state.sessions import SessionStore
from serve_app.state.store import MemoryStore
from tests.conftest import ROOT

LEGACY = ROOT / "examples" / "legacy"
MODELS = {"smollm2-135m-instruct", "gemma3-270m"}


def _run(store, keys, conversations, apply, owner_key=None, bootstrap=()):
    service = KeyService(store, MODELS)
    return asyncio.run(import_legacy(service, SessionStore(store, 3600), keys, conversations,
                                     "smollm2-135m-instruct", MODELS, list(bootstrap), owner_key, apply))


def test_csv_and_json_forms_read_alike():
    csv_keys, json_keys = parse_keys(LEGACY / "keys.csv"), parse_keys(LEGACY / "keys.json")
    assert [(k.key, k.spec, k.created_at) for k in csv_keys] == [(k.key, k.spec, k.created_at) for k in json_keys]
    telegram = csv_keys[0]
    assert telegram.spec.name == "telegram-bot" and telegram.spec.rate_limit_per_minute == 2
    assert telegram.spec.models == ["smollm2-135m-instruct"] and telegram.created_at == 1709283600
    assert csv_keys[1].spec.expires_at == 1893456000 and csv_keys[2].spec.enabled is False


def test_history_groups_conversations_in_time_order():
    conversations = {c.conversation_id: c for c in parse_history(LEGACY / "chats.jsonl")}
    assert [m["role"] for m in conversations["tg-4242"].messages] == ["system", "user", "assistant"]
    assert [m["role"] for m in conversations["mail-17"].messages] == ["user", "assistant"]
    assert conversations["mail-17"].owner_name == "email-bot"


def test_dry_run_writes_nothing_then_apply_stores_hashes_and_sessions():
    store = MemoryStore()
    keys, conversations = parse_keys(LEGACY / "keys.csv"), parse_history(LEGACY / "chats.jsonl")
    report = _run(store, keys, conversations, apply=False)
    assert report["keys"] == 3 and report["messages"] == 5 and report["keys_written"] == 0
    assert asyncio.run(store.smembers("aicore:keys")) == set()

    report = _run(store, keys, conversations, apply=True)
    assert report["keys_written"] == 3 and report["sessions_written"] == 2
    service = KeyService(store, MODELS)
    record = asyncio.run(service.lookup("sk-legacy-telegram-0001"))  # the same key authenticates
    assert record.name == "telegram-bot" and record.rate_limit_per_minute == 2
    assert record.hash == hash_key("sk-legacy-telegram-0001")
    raw = asyncio.run(store.get(f"aicore:key:{record.id}"))
    assert "sk-legacy-telegram-0001" not in raw  # only the hash and a prefix are stored
    session = asyncio.run(SessionStore(store, 3600).load(record.id, "tg-4242"))
    assert [m["content"] for m in session["messages"]][1] == "My name is Ada."
    assert session["updated"] == pytest.approx(1714557603)

    again = _run(store, keys, conversations, apply=True)  # a second run changes nothing
    assert again["keys_written"] == 0 and again["sessions_written"] == 0
    assert set(again["keys_existing"]) == {"telegram-bot", "email-bot", "old-web"}
    assert again["sessions_existing"] == ["tg-4242", "mail-17"]


def test_conversations_of_a_bootstrap_key(tmp_path):
    lines = tmp_path / "chats.jsonl"
    lines.write_text(json.dumps({"conversation_id": "c1", "role": "user", "content": "hi", "time": 5}) + "\n")
    with pytest.raises(LegacyFormatError, match="no owner"):
        _run(MemoryStore(), [], parse_history(lines), apply=False)
    with pytest.raises(LegacyFormatError, match="neither in the keys file"):
        _run(MemoryStore(), [], parse_history(lines), apply=False, owner_key="unknown")
    store = MemoryStore()
    _run(store, [], parse_history(lines), apply=True, owner_key="boot-key", bootstrap=["boot-key"])
    owner = "boot-" + hash_key("boot-key")[:12]  # the id the server gives that bootstrap key
    assert asyncio.run(SessionStore(store, 3600).load(owner, "c1"))["messages"] == [{"role": "user", "content": "hi"}]


def test_bad_rows_are_named_and_nothing_is_written(tmp_path):
    bad = tmp_path / "keys.csv"
    bad.write_text("key,name,rate_limit_per_minute,colour\n"
                   "k1,a,10,\n"
                   ",b,10,\n"
                   "k3,c,lots,\n"
                   "k1,d,1,red\n")
    with pytest.raises(LegacyFormatError) as error:
        parse_keys(bad)
    problems = error.value.problems
    assert any("row 3: no key" in p for p in problems)
    assert any("row 4: rate_limit_per_minute" in p for p in problems)
    assert any("row 5: unknown column(s) ['colour']" in p for p in problems)
    history = tmp_path / "chats.jsonl"
    history.write_text('{"conversation_id": "c", "role": "robot", "content": "x", "time": 1}\n{"role": "user"}\n')
    with pytest.raises(LegacyFormatError) as error:
        parse_history(history)
    assert [p.split(":")[0] for p in error.value.problems] == ["chats.jsonl line 1", "chats.jsonl line 2"]


def test_unknown_model_refused_before_anything_is_written(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"key": "k", "name": "n", "models": ["gpt-9"]}]))
    store = MemoryStore()
    with pytest.raises(LegacyFormatError, match="gpt-9"):
        _run(store, parse_keys(keys), [], apply=True)
    assert asyncio.run(store.smembers("aicore:keys")) == set()
