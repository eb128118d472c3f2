"""Who is calling: bootstrap keys (API_KEYS, admin) and managed keys (serve_app.access.keys).

Keys are kept only as SHA-256 hashes and compared in constant time. `Authenticator.check` turns a
presented key into a `Principal` as the key stands now; every channel's adapter (HTTP
dependencies in serve_app/http/dependencies.py, the WebSocket, Telegram and batch items through
serve_app/pipeline.py) admits requests with it.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Optional

from starlette.requests import HTTPConnection

from core.errors import (
    AddressNotAllowed,
    AuthenticationFailed,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    ModelNotFound,
    StoreUnavailable,
)
from core.netguard import allowed, parse_address, parse_networks
from serve_app.access.keys import KeyService, StoredKey, hash_key
from serve_app.access.usage import WEB_TOKENS_OWNER, Quota, quotas_of
from serve_app.state.audit_log import Actor
from serve_app.state.store import Store

__all__ = ["Principal", "Authenticator", "hash_key", "usable"]

BOOTSTRAP_NAME = "API_KEYS"  # the audit log's name of a bootstrap key


@dataclass(frozen=True)
class Principal:
    """A verified caller: a key id (never the key) and what the key may do."""

    key_id: str
    scopes: frozenset[str] = frozenset({"inference", "admin"})
    name: Optional[str] = BOOTSTRAP_NAME  # the key's name (the audit log's actor)
    models: Optional[frozenset[str]] = None  # None: every model
    default_model: Optional[str] = None
    priority: str = "interactive"  # of requests that name none
    rate_limit_per_minute: Optional[int] = None  # None: the default setting
    tokens_per_minute: Optional[int] = None
    expires_at: Optional[int] = None
    minted_by: Optional[str] = None  # a web token's minter: its budget is shared (serve_app/pipeline.py)
    minter_limits: Optional[tuple[int, int]] = None
    quotas: tuple[Quota, ...] = ()  # a web token's: its minter's, as they were at minting (shared counters)
    web_token: bool = False
    bootstrap: bool = False

    def check_model(self, name: str) -> None:
        """A model outside the key's list answers as a model that does not exist (no enumeration)."""
        if not self.may_use(name):
            raise ModelNotFound.named(name)

    def may_use(self, name: str) -> bool:
        return self.models is None or name in self.models

    def allowed_models(self, names) -> list[str]:
        return [n for n in names if self.may_use(n)]

    @property
    def actor(self) -> Actor:
        return Actor(self.key_id, self.name)

    @classmethod
    def from_record(cls, record: StoredKey) -> "Principal":
        return cls(
            key_id=record.id, scopes=frozenset(record.scopes), name=record.name,
            models=frozenset(record.models) if record.models is not None else None,
            default_model=record.default_model, priority=record.priority,
            rate_limit_per_minute=record.rate_limit_per_minute,
            tokens_per_minute=record.tokens_per_minute, expires_at=record.expires_at,
            minted_by=record.minted_by, minter_limits=getattr(record, "minter_limits", None),
            quotas=quotas_of(record.minter_quotas or {}) if record.web_token else quotas_of(record),
            web_token=record.web_token,
        )

    @property
    def usage_owner(self) -> str:
        """Whose usage series and quotas its requests count in: a web token's minter (one that a
        bootstrap key minted: all such tokens together), else its own key."""
        if self.web_token:
            return self.minted_by or WEB_TOKENS_OWNER
        return self.key_id


class Authenticator:
    def __init__(self, bootstrap_keys: list[str], header: str, keys: KeyService, store: Store, failure_mode: str):
        self._hashes = [hash_key(k) for k in bootstrap_keys]
        self.bootstrap_ids = {"boot-" + h[:12] for h in self._hashes}
        self.header = header
        self.keys = keys
        self.store = store
        self.failure_mode = failure_mode

    def presented(self, request: HTTPConnection) -> Optional[str]:
        key = request.headers.get(self.header)
        if key:
            return key.strip()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def bootstrap_principal(self, key: str) -> Optional[Principal]:
        """The bootstrap key (API_KEYS) with this secret, if it is one."""
        return self._bootstrap(key)

    def _bootstrap(self, key: str) -> Optional[Principal]:
        digest = hash_key(key)
        match = None
        for stored in self._hashes:  # check every key: timing does not reveal which matched
            if hmac.compare_digest(stored, digest):
                match = stored
        return Principal(key_id="boot-" + match[:12], bootstrap=True) if match else None

    async def check(self, key: Optional[str], client_ip: Optional[str]) -> Principal:
        """Any presented key (headers, a WebSocket message, the Telegram bot's configured key), as
        it stands now, used from `client_ip` (the address the guard resolved)."""
        if not key:
            raise AuthenticationFailed(
                f"missing API key: send it in the {self.header} header or as 'Authorization: Bearer <key>'"
            )
        principal = self._bootstrap(key)
        if principal is not None:
            if self.failure_mode == "strict" and not await self.store.ping():
                raise StoreUnavailable("the key store is unreachable (STORE_FAILURE_MODE=strict)")
            return principal
        record = await self.keys.lookup(key)  # StoreUnavailable: 503, fails closed
        if record is None:
            raise AuthenticationFailed("invalid API key")
        return usable(record, client_ip)


def usable(record: StoredKey, client_ip: Optional[str]) -> Principal:
    """A stored key as it stands now (found by its secret, or by id for a batch job's next item):
    not revoked, disabled or expired, and allowed from `client_ip`."""
    if record.revoked_at is not None:
        raise KeyRevoked("this API key has been revoked")
    if not record.enabled:
        raise KeyDisabled("this API key is disabled")
    if record.expires_at is not None and record.expires_at <= time.time():
        raise KeyExpired("this API key has expired")
    if record.ip_allowlist and not allowed(parse_address(client_ip), parse_networks(record.ip_allowlist)):
        raise AddressNotAllowed("this API key may not be used from this address")
    return Principal.from_record(record)
