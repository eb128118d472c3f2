"""Who is calling: bootstrap keys (API_KEYS, admin) and managed keys (serve_app.access.keys).

Keys are kept only as SHA-256 hashes and compared in constant time. The FastAPI dependencies
below are the HTTP adapter of the one admission path (serve_app/pipeline.py): `require_key`
(inference scope), `require_admin`, `require_admin_read` (the `admin` or `admin_read` scope: reads
of keys, usage, jobs and the audit log), `require_metrics` (the `metrics` or `admin` scope) and
`require_minter` (the `tokens` or `admin` scope) admit the request and count it against the
key's limits at once; `require_caller` admits a generation, embedding or batch-job request whose
limits the service takes once it knows the model and the request's size; `require_batch_caller`
only checks the key of a synchronous batch call, whose items are admitted one by one. The admin dependencies
record a refused attempt (no or a bad key, a missing scope, a key's address, its limits, the store
down) in the audit log (serve_app/access/refusals.py).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Optional

from fastapi import Request
from starlette.requests import HTTPConnection

from core.errors import (
    AddressNotAllowed,
    AICoreError,
    AuthenticationFailed,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    ModelNotFound,
    StoreUnavailable,
)
from serve_app.access.keys import KeyService, StoredKey, hash_key
from serve_app.access.netguard import allowed, parse_address, parse_networks
from serve_app.access.refusals import record_refused, records_refusals
from serve_app.access.usage import WEB_TOKENS_OWNER, Quota, quotas_of
from serve_app.pipeline import Admission, Outcome, RequestContext
from serve_app.state.audit_log import Actor
from serve_app.state.store import Store

__all__ = ["Principal", "Authenticator", "hash_key", "require_key", "require_admin", "require_admin_read",
           "require_metrics", "require_minter", "require_caller", "require_batch_caller", "require_job_reader",
           "require_job_canceller", "require_model_viewer", "require_any_key"]

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


def http_context(connection: HTTPConnection, channel: str = "http") -> RequestContext:
    """The request context of an HTTP request or WebSocket connection."""
    outcome = Outcome.of(connection)
    return RequestContext(channel, connection.app.state.auth.presented(connection), outcome.client_ip, outcome)


async def _admitted(request: Request, *scopes: str, count: bool = True, audited: bool = False) -> Admission:
    try:
        admission = await request.app.state.pipeline.admit(http_context(request), *scopes)
        Outcome.of(request).admissions.append(admission)  # the guard closes it when the response ends
        if count:
            await admission.limit()
    except AICoreError as error:  # refused: no key, its scope, its address, its limits, the store down
        if audited:
            await record_refused(request.scope, error)
        raise
    return admission


async def require_key(request: Request) -> Principal:
    """Listings and sessions: the `inference` scope, counted against the key's request limit."""
    return (await _admitted(request, "inference")).principal


async def require_any_key(request: Request) -> Principal:
    """A key asking about itself: any valid key, any scope, counted against its request limit."""
    return (await _admitted(request)).principal


async def require_caller(request: Request) -> Admission:
    """Generation, embedding and batch routes: the service takes the limits (model, size)."""
    return await _admitted(request, "inference", count=False)


async def require_batch_caller(request: Request) -> RequestContext:
    """The synchronous batch: the key checked for the call (a refusal is its HTTP error), which is
    no request of its own: each item is admitted as one, the key looked up again."""
    context = http_context(request)
    await request.app.state.pipeline.check(context, "inference")
    return context


@records_refusals
async def require_admin(request: Request) -> Principal:
    """Every change of keys, models, other keys' jobs: the `admin` scope."""
    return (await _admitted(request, "admin", audited=True)).principal


@records_refusals
async def require_admin_read(request: Request) -> Principal:
    """Reads for people who watch but do not operate (keys, usage, jobs, the audit log): `admin_read` or `admin`."""
    return (await _admitted(request, "admin", "admin_read", audited=True)).principal


@records_refusals
async def require_minter(request: Request) -> Principal:
    """Minting web tokens: the `tokens` scope (a public site's backend: that and nothing else) or `admin`."""
    return (await _admitted(request, "tokens", "admin", audited=True)).principal


async def require_job_reader(request: Request) -> Principal:
    """Batch job listings and status: a key's own jobs (`inference`), or every key's (`admin`, `admin_read`)."""
    return (await _admitted(request, "inference", "admin", "admin_read")).principal


async def require_job_canceller(request: Request) -> Principal:
    """Cancelling a batch job: a key's own (`inference`), or any (`admin`; `admin_read` changes nothing)."""
    return (await _admitted(request, "inference", "admin")).principal


async def require_metrics(request: Request) -> Principal:
    """Metrics list every key id and its usage: `metrics` (a scraper's key), `admin` or `admin_read`."""
    return (await _admitted(request, "metrics", "admin", "admin_read")).principal


async def require_model_viewer(request: Request) -> Principal:
    """The model list with states and replicas: callers (`inference`) and operators (`admin`, `admin_read`)."""
    return (await _admitted(request, "inference", "admin", "admin_read")).principal
