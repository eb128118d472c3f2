"""Managed API keys: create, list, update, rotate, revoke, look up (usage in key_usage.py, web tokens' rules in
web_tokens.py). No HTTP here.

Stored through the shared store (Redis or one process's memory):
  aicore:key:<id>        the record as JSON (with the SHA-256 of the key, never the key)
  aicore:keyhash:<sha>   -> id, to find a presented key's record
  aicore:keys            set of the ids of keys made by an admin (bounded by what admins make)
  aicore:webtokens       sorted set: web token id -> when its entries expire
  aicore:keys:order, aicore:webtokens:order   the list's order (serve_app/access/key_order.py)
  aicore:usage:<id>      hash of counters: requests, errors, prompt_tokens, completion_tokens, last_used_at
  usage buckets and quota periods: serve_app/access/usage.py (a web token's under its minter)

A web token (`mint_web_token`) is a key like the others, marked `web_token`, with the `inference`
scope only, named models, limits and an expiry of at most a day. Every entry of it (record, hash
index, usage, its place in `aicore:webtokens`) expires WEB_TOKEN_KEEP_S after the token does (its
usage stays readable that long), so a page minting one per visitor leaves nothing behind.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Callable, Iterable, Optional

from core.errors import InvalidRequest, KeyConflict, KeyNotFound
from serve_app.access.key_order import KeyOrder
from serve_app.access.key_record import StoredKey
from serve_app.access.key_usage import _USAGE, KeyUsageMixin
from serve_app.access.usage import (
    QuotaClock,
)
from serve_app.access.usage_buffer import UsageBuffer
from serve_app.access.web_tokens import Minter, check_web_token
from serve_app.protocol.keys import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyUpdate,
    KeyView,
    WebTokenCreate,
)
from serve_app.state.store import Store

KEY_PREFIX = "aic-"
_RECORD, _BY_HASH, _IDS = "aicore:key:", "aicore:keyhash:", "aicore:keys"
_WEB_TOKENS = "aicore:webtokens"
MODIFY_ATTEMPTS = 20  # a record changed this many times while one change is applied: 409
WEB_TOKEN_KEEP_S = 86400  # default of the setting: an expired web token's entries are kept this long
Seen = Callable[[KeyView, KeyView], None]  # a change's record before and after, as views


def hash_key(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyService(KeyUsageMixin):
    def __init__(self, store: Store, model_names: Iterable[str], web_token_keep_s: float = WEB_TOKEN_KEEP_S,
                 clock: Optional[QuotaClock] = None, buffer: Optional[UsageBuffer] = None):
        self.store = store
        self.model_names = set(model_names)
        self.web_token_keep_s = web_token_keep_s
        self.clock = clock or QuotaClock()
        self.buffer = buffer  # usage buckets summed in memory and written together; None: at each request
        self.order = KeyOrder(store, web_token_keep_s)

    # -- administration -------------------------------------------------------------------
    async def create(self, spec: KeyCreate, web_token: bool = False, minted_by: Optional[str] = None,
                     minter_limits: Optional[tuple[int, int]] = None,
                     minter_quotas: Optional[dict[str, int]] = None) -> KeyCreated:
        self._check_models(spec.models, spec.default_model)
        now = int(time.time())
        key, key_id = KEY_PREFIX + secrets.token_urlsafe(32), "key-" + secrets.token_hex(8)
        fields = spec.model_dump(exclude={"expires_in_s"})
        if spec.expires_in_s:
            fields["expires_at"] = now + spec.expires_in_s
        record = StoredKey(id=key_id, key_prefix=key[:8], created_at=now, hash=hash_key(key), web_token=web_token,
                           minted_by=minted_by, minter_limits=minter_limits, minter_quotas=minter_quotas, **fields)
        if web_token:
            check_web_token(record)
        await self._save(record)
        keep_s = self._keep_s(record)
        await self.store.set(_BY_HASH + record.hash, key_id, ttl_s=keep_s)
        if web_token:  # its usage counters expire with it (a counter added later keeps the expiry)
            await self.store.hset(_USAGE + key_id, {"requests": "0"})
            await self.store.expire(_USAGE + key_id, keep_s)
            await self.store.zadd_expiring(_WEB_TOKENS, key_id, time.time() + keep_s)
        else:
            await self.store.sadd(_IDS, key_id)
        await self.order.add(key_id, now, web_token)
        return KeyCreated(key=key, **record.view().model_dump())

    async def mint_web_token(self, spec: WebTokenCreate, minter: Optional["Minter"] = None) -> KeyCreated:
        """A short-lived key for a public web page (inference only, its models and limits), within
        what `minter` (the managed key asking: `tokens` or `admin` scope) may itself do."""
        key = spec.as_key()
        if minter is not None:
            self._check_models(key.models, key.default_model, minter.may_use)
            key = minter.bound(spec, key)
        if minter is None:
            return await self.create(key, web_token=True)
        return await self.create(key, web_token=True, minted_by=minter.key_id,
                                 minter_limits=(minter.requests_per_minute, minter.tokens_per_minute),
                                 minter_quotas=minter.quotas or None)

    async def adopt(self, key: str, spec: KeyCreate, created_at: Optional[int] = None) -> Optional[KeyView]:
        """Store a key that already exists elsewhere (an older system's plaintext key) by its hash,
        so the same key keeps working. None when a stored key has that hash already."""
        self._check_models(spec.models, spec.default_model)
        digest = hash_key(key)
        if await self.store.get(_BY_HASH + digest) is not None:
            return None
        fields = spec.model_dump(exclude={"expires_in_s"})
        if spec.expires_in_s:
            fields["expires_at"] = int(time.time()) + spec.expires_in_s
        record = StoredKey(id="key-" + secrets.token_hex(8), key_prefix=key[:8],
                           created_at=created_at or int(time.time()), hash=digest, **fields)
        await self._save(record)
        await self.store.set(_BY_HASH + digest, record.id)
        await self.store.sadd(_IDS, record.id)
        await self.order.add(record.id, record.created_at, False)
        return record.view()

    async def id_of(self, key: str) -> Optional[str]:
        """The id of the stored key with this secret, if any (no checks of its state)."""
        return await self.store.get(_BY_HASH + hash_key(key))

    async def list(self) -> list[KeyView]:
        ids = sorted(await self.store.smembers(_IDS) | await self.store.zlive(_WEB_TOKENS))
        records = [await self._load(key_id) for key_id in ids]
        for key_id, record in zip(ids, records):
            if record is None:  # a web token whose record expired: forget it
                await self.store.srem(_IDS, key_id)
                await self.store.delete(_USAGE + key_id)
        return sorted((r.view() for r in records if r), key=lambda r: r.created_at)

    async def page(self, limit: int, after: Optional[str] = None, search: Optional[str] = None) -> KeyList:
        """Keys in the order they were made, `limit` of them after the key `after` (the previous
        page's `last_id`), only those whose name, owner, id or key prefix contain `search`
        (case-insensitive). Without `search` a page reads the order indexes and its own records only."""
        if not search:
            await self.order.ensure(self.list)
            cursor = None
            if after is not None:
                record = await self._load(after)
                if record is None:
                    raise _after_not_found(after)
                cursor = (record.created_at, after)
            keys = await self.order.page(limit + 1, cursor, self._view)
        else:
            keys = await self.list()
            if after is not None:
                ids = [k.id for k in keys]
                if after not in ids:
                    raise _after_not_found(after)
                keys = keys[ids.index(after) + 1:]
            needle = search.casefold()
            keys = [k for k in keys if any(needle in (v or "").casefold() for v in (k.name, k.owner, k.id, k.key_prefix))]
        data = keys[:limit]
        return KeyList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                       has_more=len(keys) > limit)

    async def _view(self, key_id: str) -> Optional[KeyView]:
        record = await self._load(key_id)
        return record.view() if record else None

    async def get(self, key_id: str) -> KeyView:
        return (await self._require(key_id)).view()

    async def record(self, key_id: str) -> StoredKey:
        """The whole stored record (what admission reads: a web token's minter limits too)."""
        return await self._require(key_id)

    async def update(self, key_id: str, patch: KeyUpdate, seen: Optional[Seen] = None) -> KeyView:
        changes = patch.model_dump(include=patch.model_fields_set)
        for required in ("name", "scopes", "ip_allowlist", "enabled", "priority"):
            if required in changes and changes[required] is None:
                raise InvalidRequest(f"{required} cannot be null", param=required)

        def change(record: StoredKey) -> StoredKey:
            updated = record.model_copy(update=changes)
            self._check_models(updated.models, updated.default_model)
            if updated.web_token:  # a schema-valid change this key's kind refuses: 409, not 400
                check_web_token(updated, KeyConflict)
            return updated

        return (await self._modify(key_id, change, seen)).view()

    async def revoke(self, key_id: str, seen: Optional[Seen] = None) -> KeyView:
        def change(record: StoredKey) -> StoredKey:
            if record.revoked_at is not None:
                return record
            return record.model_copy(update={"revoked_at": int(time.time()), "enabled": False})

        return (await self._modify(key_id, change, seen)).view()

    async def rotate(self, key_id: str, seen: Optional[Seen] = None) -> KeyCreated:
        """A new secret for the same id and settings; the old secret stops working at once."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        old_hashes: list[str] = []

        def change(record: StoredKey) -> StoredKey:
            if record.revoked_at is not None:
                raise KeyConflict(f"key {key_id!r} is revoked and cannot be rotated", param="id",
                                  code="key_revoked")
            old_hashes[:] = [record.hash]
            return record.model_copy(update={"hash": hash_key(key), "key_prefix": key[:8]})

        # The record (whose hash lookups compare against) changes first: from then on the old
        # secret fails even while its index entry still exists, and a revoke sees the new record.
        record = await self._modify(key_id, change, seen)
        await self.store.set(_BY_HASH + record.hash, key_id, ttl_s=self._keep_s(record))
        await self.store.delete(_BY_HASH + old_hashes[0])
        return KeyCreated(key=key, **record.view().model_dump())

    # -- authentication -------------------------------------------------------------------
    async def lookup(self, key: str) -> Optional[StoredKey]:
        digest = hash_key(key)
        raw = await self.store.get_indirect(_BY_HASH + digest, _RECORD)  # one round trip
        record = StoredKey.model_validate_json(raw) if raw else None
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        return record

    # -- internals ------------------------------------------------------------------------
    def _check_models(self, models: Optional[list[str]], default_model: Optional[str],
                      may_use: Callable[[str], bool] = lambda name: True) -> None:
        """Each model exists (and, minting, is one the minter may use: the same answer, no enumeration)."""
        for name in models or ():
            if name not in self.model_names or not may_use(name):
                raise InvalidRequest(f"model {name!r} does not exist", param="models", code="model_not_found")
        if default_model is not None:
            if default_model not in self.model_names or not may_use(default_model):
                raise InvalidRequest(f"model {default_model!r} does not exist", param="default_model",
                                     code="model_not_found")
            if models is not None and default_model not in models:
                raise InvalidRequest("default_model must be one of models", param="default_model")

    async def _modify(self, key_id: str, change: Callable[[StoredKey], StoredKey],
                      seen: Optional[Seen] = None) -> StoredKey:
        """Read-modify-write of one record that never undoes a concurrent change (a revoke during
        an update or a rotate): the write happens only if the record is still what was read,
        otherwise the change is applied again to the newer record. `seen` gets the views before
        and after of the write that happened (the audit log's before/after: no secret, no hash)."""
        for _ in range(MODIFY_ATTEMPTS):
            raw = await self.store.get(_RECORD + key_id)
            if raw is None:
                raise KeyNotFound(f"no API key with id {key_id!r}", param="id")
            current = StoredKey.model_validate_json(raw)
            updated = change(current)
            if updated == current:
                if seen is not None:
                    seen(current.view(), current.view())
                return current
            if await self.store.compare_and_set(_RECORD + key_id, raw, updated.model_dump_json()):
                if updated.web_token:  # the write dropped the record's expiry
                    await self.store.expire(_RECORD + key_id, self._keep_s(updated))
                if seen is not None:
                    seen(current.view(), updated.view())
                return updated
        raise KeyConflict(f"key {key_id!r} is being changed by other requests; try again", param="id")

    async def _save(self, record: StoredKey) -> None:
        await self.store.set(_RECORD + record.id, record.model_dump_json(), ttl_s=self._keep_s(record))

    def _keep_s(self, record: StoredKey) -> Optional[float]:
        """How long a web token's entries live (until a while after it expires); other keys: for ever."""
        if not record.web_token or record.expires_at is None:
            return None
        return max(1.0, record.expires_at - time.time()) + self.web_token_keep_s

    async def _load(self, key_id: str) -> Optional[StoredKey]:
        raw = await self.store.get(_RECORD + key_id)
        return StoredKey.model_validate_json(raw) if raw else None

    async def _require(self, key_id: str) -> StoredKey:
        record = await self._load(key_id)
        if record is None:
            raise KeyNotFound(f"no API key with id {key_id!r}", param="id")
        return record


def _after_not_found(after: str) -> KeyNotFound:
    return KeyNotFound(f"after: no listed key with id {after!r}", param="after")
