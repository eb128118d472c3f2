"""The one admission path: every way in (both HTTP APIs, WebSocket messages, batch items,
Telegram updates, embeddings) is admitted here, in one order, and settled here.

A channel adapter builds a `RequestContext` (the presented key, the client address, the
channel) and asks `Pipeline.admit` for an `Admission`:
  1. the key is valid now (looked up again for every request, so a revoked key's open
     WebSocket is refused at its next message), not disabled or expired;
  2. the key has the scope;
  3. the key's own IP allowlist admits the client (the global IP_ALLOWLIST is applied to
     every connection before any of this, by the guard);
then the generation or embedding service calls `Admission.limit` once it knows the model and
the request's size:
  4. the key may use the model;
  5. requests per minute, and tokens per minute with prompt + `max_tokens` reserved at once
     (one atomic store call: serve_app/access/ratelimit.py).
     The key's daily and monthly quotas (a web token's: its minter's) are checked in the same
     store call (serve_app/access/usage.py: 429 `quota_exceeded`).
The content filter, cache and sessions follow in the services. Every admission is settled once,
by `Admission.close`, with the status taken from how the request ended (`status_of`): a
WebSocket message, a batch item or a Telegram update runs inside `Admission.settling()`; an HTTP
response's admissions are settled by the guard, with the response's status, before its last
byte leaves (or, when it never ends, as a client that left). Each admission records its own
usage: a batch item is a request of its own, admitted with the key looked up again; the
synchronous batch call itself only checks the key (it is no request); a batch job's submission
is one request (no tokens) and each item another. `close` settles the reservation to the
tokens really used (a client that left is charged for what it got, a request refused later,
e.g. for overload, gives it back) and records the key's usage: its running totals, the usage
buckets of its model and its quota periods, in one store call. Outcomes are typed: `Outcome` is the one record of a request that the
access log, metrics and response headers read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Optional

from core.errors import (
    AICoreError,
    AuthenticationFailed,
    KeyNotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RequestCancelled,
)
from serve_app.access.auth import Authenticator, Principal, usable
from serve_app.access.ratelimit import Limits, Pool, Reservation

if TYPE_CHECKING:
    from serve_app.access.keys import KeyService
    from serve_app.access.ratelimit import RateLimiter

logger = logging.getLogger("aicore.pipeline")

ADDRESS_POOL = ":addr:"  # a web token pool's name: <minter>:addr:<client address>



def status_of(error: Optional[BaseException] = None) -> int:
    """The status a request is settled and logged with, from how it ended: done (no error), its
    error's, or a cancel's (the client left, or a job was cancelled, before its end)."""
    if error is None:
        return int(HTTPStatus.OK)
    if isinstance(error, asyncio.CancelledError):
        return RequestCancelled.status
    return error.status if isinstance(error, AICoreError) else int(HTTPStatus.INTERNAL_SERVER_ERROR)


@dataclass
class Outcome:
    """What one HTTP request or WebSocket connection did: read by the access log, the metrics
    event, the guard (rate-limit headers, closing admissions) and the error handlers."""

    client_ip: Optional[str] = None
    key_id: Optional[str] = None
    model: Optional[str] = None
    cache: Optional[str] = None  # "hit", "miss" or None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: Optional[float] = None
    tokens_per_s: Optional[float] = None
    log_prompt: Optional[str] = None  # LOG_PROMPTS only
    log_response: Optional[str] = None
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    ratelimit_headers: dict[str, str] = field(default_factory=dict)
    admissions: list["Admission"] = field(default_factory=list)  # closed when the response ends

    @classmethod
    def of(cls, scope: Any) -> "Outcome":
        """The request's outcome (an ASGI scope, or a Starlette Request/WebSocket); made on first use."""
        scope = getattr(scope, "scope", scope)
        state = scope.setdefault("state", {})
        outcome = state.get("outcome")
        if outcome is None:
            outcome = state["outcome"] = cls()
        return outcome

    async def settle(self, ended: Optional[BaseException] = None, status: Optional[int] = None) -> None:
        """Settle the request's admissions: with `status` (an HTTP response's, as it ends), else
        as `ended` says (None: done; a cancel: the client left)."""
        status = status if status is not None else status_of(ended)
        for admission in self.admissions:
            await admission.close(status)


@dataclass(frozen=True)
class RequestContext:
    """Who asks, from where, by which way in. `key` is the secret as presented (kept only for
    the duration of the request or connection, to check it again)."""

    channel: str  # "http", "websocket", "batch", "telegram"
    key: Optional[str]
    client_ip: Optional[str]
    outcome: Outcome = field(default_factory=Outcome, compare=False)


class InFlight:
    """Requests each managed key has running in this ingress replica (admitted, not yet closed),
    capped on every channel: a key's SSE streams, WebSocket messages, batch items and Telegram
    updates all count. Per replica, in memory: a count in the shared store would outlive a
    replica that dies with requests open. Bootstrap keys (the operator's) are not capped."""

    def __init__(self, limit: int):
        self.limit = limit  # 0: no cap
        self.counts: dict[str, int] = {}

    def take(self, owners: tuple[str, ...]) -> None:
        """One more request for each of `owners` (a key; a web token's pools too), all or none."""
        for owner in owners:
            running = self.counts.get(owner, 0)
            if self.limit and running >= self.limit:
                whose = "this API key" if owner == owners[0] else "the web tokens of its minter" + (
                    " used from this address" if "@" in owner else "")
                raise RateLimited(
                    f"{whose} has {running} requests running, the most it may have at once "
                    f"(MAX_IN_FLIGHT_PER_KEY={self.limit}); wait for one to end", kind="requests",
                    code="too_many_in_flight", retry_after_s=1)
        for owner in owners:
            self.counts[owner] = self.counts.get(owner, 0) + 1

    def give(self, owners: tuple[str, ...]) -> None:
        for owner in owners:
            running = self.counts.get(owner, 0) - 1
            if running > 0:
                self.counts[owner] = running
            else:
                self.counts.pop(owner, None)


class Admission:
    """One admitted request of one caller: its limits taken, its usage charged, closed once."""

    def __init__(self, pipeline: "Pipeline", context: RequestContext, principal: "Principal"):
        self.pipeline = pipeline
        self.context = context
        self.principal = principal
        self.reservation: Optional[Reservation] = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.closed = False
        self.running: tuple[str, ...] = ()  # whose in-flight requests it counts in
        self.model: Optional[str] = None  # what it was limited for: its usage's model
        self.admitted = False  # passed its limits and quotas: counts in the quota periods

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    @property
    def usage_owner(self) -> str:
        return self.principal.usage_owner

    def priority(self, requested: Optional[str]) -> str:
        """The request's own choice, else `batch` for batch work or a key whose default is batch."""
        if requested:
            return requested
        return "batch" if self.context.channel == "batch" or self.principal.priority == "batch" else "interactive"

    async def limit(self, model: Optional[str] = None, reserve_tokens: int = 0) -> None:
        """The model is allowed to the key, then one request and `reserve_tokens` are taken
        from the key's per-minute limits, once its quotas allow (RateLimited, QuotaExceeded: 429)."""
        if model is not None:
            self.principal.check_model(model)
            self.model = model
        if self.reservation is not None:  # counted once per admission
            return
        if self.principal.bootstrap:
            self.reservation = Reservation(self.key_id, self.pipeline.limiter.limits(0, 0))
            return
        limiter = self.pipeline.limiter
        limits = limiter.limits(self.principal.rate_limit_per_minute, self.principal.tokens_per_minute)
        pools = self._pools(limits)
        quotas = limiter.clock.states(self.usage_owner, self.principal.quotas, time.time())
        try:
            self.reservation = await limiter.admit(self.key_id, limits, reserve_tokens, pools, quotas, self.usage_owner)
        except QuotaExceeded as error:
            self.pipeline.on_quota(self.usage_owner, error.param, error.used_ratio)
            raise
        self.context.outcome.ratelimit_headers = self.reservation.headers
        for name, share in self.reservation.quota_used:
            self.pipeline.on_quota(self.usage_owner, name, share)
        if model is not None:  # model work (not listings): after the limits, so a burst they refuse holds nothing
            owners = (self.key_id, *(pool.name.replace(ADDRESS_POOL, "@") for pool in pools))
            self.pipeline.in_flight.take(owners)  # RateLimited: close() gives the reservation back
            self.running = owners
        self.admitted = True

    def _pools(self, limits: Limits) -> tuple[Pool, ...]:
        """A web token shares its minter's budget (the minter's own windows, with the minter's
        limits as they were at minting) and, with the other tokens that minter gave the same
        client address, its own limits: a page reloaded for a fresh token starts from nothing."""
        minter = self.principal.minted_by
        if not minter:
            return ()
        minter_limits = Limits(*(self.principal.minter_limits or (0, 0)))
        address = self.context.client_ip or "unknown"
        return (Pool(minter, minter_limits, f"the web tokens of key {minter} and the key itself"),
                Pool(f"{minter}{ADDRESS_POOL}{address}", limits,
                     f"the web tokens of key {minter} used from this address"))

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The tokens this request used (replaces an earlier charge: the last count is the truest)."""
        outcome = self.context.outcome  # shared by a batch's items: each adds its own
        outcome.prompt_tokens += prompt_tokens - self.prompt_tokens
        outcome.completion_tokens += completion_tokens - self.completion_tokens
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    @asynccontextmanager
    async def settling(self) -> AsyncIterator["Admission"]:
        """Run a request and settle it on the way out, with the status taken from how it ended
        (done: 200, an error: its status, cancelled: the client left). What every channel that
        is not an HTTP response (WebSocket messages, batch items, Telegram updates) runs its work
        in; an HTTP response is settled by the guard when its last byte leaves. Shielded: the
        cancel that ends a request cannot cut its usage write."""
        try:
            yield self
        except BaseException as error:
            await asyncio.shield(self.close(status_of(error)))
            raise
        await asyncio.shield(self.close(status_of()))

    async def close(self, status: int) -> None:
        """Settle the reservation and record the key's usage; once, and never failing the answer."""
        if self.closed:
            return
        self.closed = True
        self._stop_running()
        used = self.prompt_tokens + self.completion_tokens
        try:
            if self.reservation is not None:
                await self.pipeline.limiter.settle(self.reservation, used)
            await self.pipeline.keys.record_usage(
                self.key_id, status, self.prompt_tokens, self.completion_tokens, model=self.model,
                owner=self.usage_owner, admitted=self.admitted)
        except Exception as error:  # the answer is already on its way: never fail it here
            logger.warning("could not record usage for %s: %s", self.key_id, type(error).__name__)

    def _stop_running(self) -> None:
        if self.running:
            self.pipeline.in_flight.give(self.running)
            self.running = ()


class Pipeline:
    def __init__(self, auth: "Authenticator", limiter: "RateLimiter", keys: "KeyService", max_in_flight_per_key: int = 0,
                 on_quota: Callable[[str, str, float], None] = lambda key_id, quota, share: None):
        self.auth = auth
        self.limiter = limiter
        self.keys = keys
        self.in_flight = InFlight(max_in_flight_per_key)
        self.on_quota = on_quota  # (key id, quota name, share used) at each admission of a key with quotas

    async def admit(self, context: RequestContext, *scopes: str, known: Optional["Principal"] = None) -> Admission:
        """Steps 1-3 (`check`), then the request's admission: its limits, usage and settling."""
        return Admission(self, context, await self.check(context, *scopes, known=known))

    async def check(self, context: RequestContext, *scopes: str, known: Optional["Principal"] = None) -> "Principal":
        """Steps 1-3: the key valid now, one of `scopes`, the key's IP allowlist. `known`: a key
        checked before whose secret is not kept (a batch job's items), looked up again by its id."""
        if known is None:
            principal = await self.auth.check(context.key, context.client_ip)
        else:
            principal = await self._again(known, context.client_ip)
        context.outcome.key_id = principal.key_id
        if scopes and not principal.scopes.intersection(scopes):
            raise PermissionDenied(f"this API key lacks the {' or '.join(repr(s) for s in scopes)} scope")
        return principal

    async def _again(self, known: "Principal", client_ip: Optional[str]) -> "Principal":
        """The key as it stands now, by id (one store read): what `Authenticator.check` checks after
        finding a presented key. Bootstrap keys (API_KEYS) cannot change."""
        if known.bootstrap:
            return known
        try:
            record = await self.keys.record(known.key_id)  # StoreUnavailable: not now, not refused
        except KeyNotFound:
            raise AuthenticationFailed("this API key no longer exists") from None
        return usable(record, client_ip)
