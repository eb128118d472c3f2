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
The content filter, cache and sessions follow in the services. When the request ends,
`Admission.close` settles the reservation to the tokens really used (a client that left is
charged for what it got, a request refused later, e.g. for overload, gives it back) and
records the key's usage. Outcomes are typed: `Outcome` is the one record of a request that the
access log, metrics and response headers read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from core.access_errors import PermissionDenied
from serve_app.access.ratelimit import Reservation

if TYPE_CHECKING:
    from serve_app.access.auth import Authenticator, Principal
    from serve_app.access.keys import KeyService
    from serve_app.access.ratelimit import RateLimiter

logger = logging.getLogger("aicore.pipeline")

CHARS_PER_TOKEN = 4  # a prompt's tokens are estimated from its length until the model counts them
CLIENT_GONE = 499  # the status a request is recorded with when the client left before its end


def estimate_tokens(text_length: int) -> int:
    return math.ceil(text_length / CHARS_PER_TOKEN)


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

    async def close_admissions(self, status: int) -> None:
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


class Admission:
    """One admitted request of one caller: its limits taken, its usage charged, closed once."""

    def __init__(self, pipeline: "Pipeline", context: RequestContext, principal: "Principal"):
        self.pipeline = pipeline
        self.context = context
        self.principal = principal
        self.reservation: Optional[Reservation] = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.delegated = False  # its work was split into admissions of their own (batch items)
        self.closed = False

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    def priority(self, requested: Optional[str]) -> str:
        """The request's own choice, else `batch` for batch work or a key whose default is batch."""
        if requested:
            return requested
        return "batch" if self.context.channel == "batch" or self.principal.priority == "batch" else "interactive"

    async def limit(self, model: Optional[str] = None, reserve_tokens: int = 0) -> None:
        """The model is allowed to the key, then one request and `reserve_tokens` are taken
        from the key's per-minute limits (RateLimited: 429 with Retry-After)."""
        if model is not None:
            self.principal.check_model(model)
        if self.reservation is not None:  # counted once per admission
            return
        if self.principal.bootstrap:
            self.reservation = Reservation(self.key_id, self.pipeline.limiter.limits(0, 0))
            return
        limits = self.pipeline.limiter.limits(self.principal.rate_limit_per_minute, self.principal.tokens_per_minute)
        self.reservation = await self.pipeline.limiter.admit(self.key_id, limits, reserve_tokens)
        self.context.outcome.ratelimit_headers = self.reservation.headers

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The tokens this request used (replaces an earlier charge: the last count is the truest)."""
        outcome = self.context.outcome  # shared by a batch's items: each adds its own
        outcome.prompt_tokens += prompt_tokens - self.prompt_tokens
        outcome.completion_tokens += completion_tokens - self.completion_tokens
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    async def close(self, status: int) -> None:
        """Settle the reservation and record the key's usage; once, and never failing the answer."""
        if self.closed:
            return
        self.closed = True
        used = self.prompt_tokens + self.completion_tokens
        try:
            if self.reservation is not None:
                await self.pipeline.limiter.settle(self.reservation, used)
            if not self.delegated:
                await self.pipeline.keys.record_usage(self.key_id, status, self.prompt_tokens, self.completion_tokens)
        except Exception as error:  # the answer is already on its way: never fail it here
            logger.warning("could not record usage for %s: %s", self.key_id, type(error).__name__)


class Pipeline:
    def __init__(self, auth: "Authenticator", limiter: "RateLimiter", keys: "KeyService"):
        self.auth = auth
        self.limiter = limiter
        self.keys = keys

    async def admit(self, context: RequestContext, *scopes: str) -> Admission:
        """Steps 1-3: the key valid now, one of `scopes`, the key's IP allowlist."""
        principal = await self.auth.check(context.key, context.client_ip)
        context.outcome.key_id = principal.key_id
        if scopes and not principal.scopes.intersection(scopes):
            raise PermissionDenied(f"this API key lacks the {' or '.join(repr(s) for s in scopes)} scope")
        return Admission(self, context, principal)

    def admit_part(self, parent: Admission, channel: str = "batch") -> Admission:
        """An admission for one part of an admitted request (a batch item): same caller, its own
        limits and usage. The parent then records no usage of its own."""
        parent.delegated = True
        context = RequestContext(channel, None, parent.context.client_ip, parent.context.outcome)
        return Admission(self, context, parent.principal)
