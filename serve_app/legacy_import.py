"""Import an older system's data: plaintext API keys (CSV or JSON) and chat histories (JSON lines).

Keys are stored as their SHA-256 (`KeyService.adopt`), so the same key keeps working and the key
itself is stored nowhere. Each conversation becomes a chat session of the key that owns it, the
same record `"session_id"` requests read. The forms are documented in docs/migration.md.
Parsing checks every row first; nothing is written when any row is wrong, or on a dry run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from serve_app.access.keys import KeyService, hash_key
from serve_app.protocol.keys import KeyCreate
from serve_app.state.sessions import SessionStore

KEY_FIELDS = ("key", "name", "owner", "scopes", "models", "default_model", "rate_limit_per_minute",
              "tokens_per_minute", "ip_allowlist", "expires_at", "enabled", "created_at")
LIST_FIELDS = ("scopes", "models", "ip_allowlist")
ROLES = ("system", "user", "assistant")


class LegacyFormatError(ValueError):
    """One or more rows are wrong; `problems` names each (file, row or line, what)."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:10]))
        self.problems = problems


@dataclass
class LegacyKey:
    key: str
    spec: KeyCreate
    created_at: Optional[int]


@dataclass
class Conversation:
    conversation_id: str
    messages: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    owner_key: Optional[str] = None  # a plaintext key
    owner_name: Optional[str] = None  # the name of a key in the keys file
    model: Optional[str] = None


def parse_time(value: Any) -> float:
    """Unix seconds (number or digits) or ISO-8601 (`Z` allowed)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _key_row(row: dict, where: str) -> LegacyKey:
    row = {k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")}
    unknown = set(row) - set(KEY_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown column(s) {sorted(unknown)}")
    key = str(row.pop("key", "")).strip()
    if not key:
        raise ValueError(f"{where}: no key")
    created = row.pop("created_at", None)
    for name in LIST_FIELDS:
        if isinstance(row.get(name), str):  # CSV: separated by spaces or semicolons
            row[name] = [part for part in row[name].replace(";", " ").split() if part]
    if isinstance(row.get("enabled"), str):
        row["enabled"] = row["enabled"].strip().lower() in ("1", "true", "yes", "on")
    if "expires_at" in row:
        row["expires_at"] = int(parse_time(row["expires_at"]))
    try:
        spec = KeyCreate.model_validate(row, strict=False)  # CSV cells are text: read loosely
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return LegacyKey(key, spec, int(parse_time(created)) if created is not None else None)


def parse_keys(path: Path) -> list[LegacyKey]:
    """CSV with a header row, or JSON (a list of objects, or `{"keys": [...]}`)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        rows = data["keys"] if isinstance(data, dict) else data
        labelled = [(row, f"{path.name} item {i}") for i, row in enumerate(rows)]
    else:
        labelled = [(row, f"{path.name} row {i}") for i, row in enumerate(csv.DictReader(io.StringIO(text)), start=2)]
    keys, problems, seen = [], [], {}
    for row, where in labelled:
        try:
            if not isinstance(row, dict):
                raise ValueError(f"{where}: not an object")
            item = _key_row(dict(row), where)
        except ValueError as error:
            problems.append(str(error))
            continue
        if item.key in seen:
            problems.append(f"{where}: the same key as {seen[item.key]}")
        seen[item.key] = where
        keys.append(item)
    if problems:
        raise LegacyFormatError(problems)
    return keys


def parse_history(path: Path) -> list[Conversation]:
    """JSON lines: conversation_id, role, content, time; optional key, key_name, model."""
    conversations: dict[str, Conversation] = {}
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            item = json.loads(line)
            cid, role, content = str(item["conversation_id"]), item["role"], item["content"]
            if role not in ROLES or not isinstance(content, str):
                raise ValueError(f"role must be one of {ROLES} and content a string")
            when = parse_time(item["time"])
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{where}: {error if not isinstance(error, KeyError) else f'missing {error}'}")
            continue
        conversation = conversations.setdefault(cid, Conversation(cid))
        conversation.messages.append({"role": role, "content": content})
        conversation.times.append(when)
        for attribute, name in (("owner_key", "key"), ("owner_name", "key_name"), ("model", "model")):
            value = item.get(name)
            if value is not None and getattr(conversation, attribute) not in (None, value):
                problems.append(f"{where}: conversation {cid!r} has two different {name}s")
            elif value is not None:
                setattr(conversation, attribute, value)
    if problems:
        raise LegacyFormatError(problems)
    for conversation in conversations.values():  # in time order; stable for equal times
        order = sorted(range(len(conversation.times)), key=conversation.times.__getitem__)
        conversation.messages = [conversation.messages[i] for i in order]
        conversation.times = [conversation.times[i] for i in order]
    return list(conversations.values())


async def import_legacy(keys_service: KeyService, sessions: SessionStore, keys: list[LegacyKey],
                        conversations: list[Conversation], default_model: str, models: set[str],
                        bootstrap_keys: list[str], owner_key: Optional[str] = None, apply: bool = False) -> dict:
    """Check everything against the store, then (with `apply`) write. Returns a report."""
    report: dict[str, Any] = {"apply": apply, "keys": len(keys), "keys_existing": [], "keys_written": 0,
                              "conversations": len(conversations), "messages": 0, "sessions_existing": [],
                              "sessions_written": 0}
    problems = []
    for item in keys:
        try:
            keys_service._check_models(item.spec.models, item.spec.default_model)
        except Exception as error:  # InvalidRequest: a model this server does not have
            problems.append(f"key {item.spec.name!r}: {getattr(error, 'message', error)}")
        if await keys_service.id_of(item.key) is not None:
            report["keys_existing"].append(item.spec.name)
    by_name = {item.spec.name: item.key for item in keys}
    imported = set(by_name.values())
    owners: dict[str, str] = {}  # conversation id -> the owner's plaintext key
    for conversation in conversations:
        cid = conversation.conversation_id
        secret = by_name.get(conversation.owner_name) if conversation.owner_name else (conversation.owner_key or owner_key)
        report["messages"] += len(conversation.messages)
        if conversation.owner_name and secret is None:
            problems.append(f"conversation {cid!r}: no key named {conversation.owner_name!r} in the keys file")
        elif secret is None:
            problems.append(f"conversation {cid!r}: no owner (give key or key_name, or --owner-key)")
        elif secret not in imported and secret not in bootstrap_keys and await keys_service.id_of(secret) is None:
            problems.append(f"conversation {cid!r}: its key is neither in the keys file, nor stored, nor in API_KEYS")
        elif (conversation.model or default_model) not in models:
            problems.append(f"conversation {cid!r}: unknown model {conversation.model!r}")
        else:
            owners[cid] = secret
            if await sessions.load(await _owner_id(keys_service, secret), cid):
                report["sessions_existing"].append(cid)
    if problems:
        raise LegacyFormatError(problems)
    if not apply:
        return report
    for item in keys:
        if await keys_service.adopt(item.key, item.spec, item.created_at) is not None:
            report["keys_written"] += 1
    for conversation in conversations:
        if conversation.conversation_id in report["sessions_existing"]:
            continue
        owner = await _owner_id(keys_service, owners[conversation.conversation_id])
        await sessions.save(owner, conversation.conversation_id, conversation.model or default_model,
                            conversation.messages, updated=conversation.times[-1])
        report["sessions_written"] += 1
    return report


async def _owner_id(keys_service: KeyService, secret: str) -> str:
    """The id sessions are filed under: a stored key's id, else the bootstrap id of that key."""
    stored = await keys_service.id_of(secret)
    return stored or "boot-" + hash_key(secret)[:12]


def run(keys_path: Optional[Path], history_path: Optional[Path], redis_url: str, models_path: Optional[Path],
        owner_key: Optional[str], apply: bool) -> dict:
    """The `import-legacy` command: settings (REDIS_PASSWORD, API_KEYS, SESSION_TTL_S, DEFAULT_MODEL,
    MODEL_CONFIG_PATH) from the environment, as the server reads them."""
    import asyncio

    from core.settings import Settings
    from deployments.config import load_models_file
    from serve_app.state.store import RedisStore

    settings = Settings()
    models = load_models_file(models_path or settings.resolve(settings.model_config_path)).models
    default_model = settings.default_model or next(n for n, c in models.items() if c.task == "generate")
    keys = parse_keys(keys_path) if keys_path else []
    conversations = parse_history(history_path) if history_path else []

    async def main() -> dict:
        store = RedisStore(redis_url, timeout_s=5, password=settings.redis_password)
        try:
            return await import_legacy(KeyService(store, models), SessionStore(store, settings.session_ttl_s), keys,
                                       conversations, default_model, set(models), settings.api_keys,
                                       owner_key, apply)
        finally:
            await store.client.aclose()

    return asyncio.run(main())
