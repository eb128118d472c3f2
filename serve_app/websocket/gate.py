"""Sockets of `WS /api/v1/ws` before auth (docs/security.md#websockets-before-auth): the caps on
unauthenticated sockets per address and in total, and the refusal of an address whose
authentications keep failing. The connection itself: serve_app/websocket/session.py."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

from core.errors import AICoreError, Overloaded, RateLimited

logger = logging.getLogger("aicore.ws")

# WebSocket close codes (RFC 6455)
POLICY_VIOLATION = 1008  # failed authentication, a first message that is not a small `auth`, refused address
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013  # this replica holds WS_UNAUTHENTICATED_TOTAL sockets before auth
_FAILURES = "aicore:wsauth:failures:"  # + address: failed authentications in the current minute
_BLOCKED = "aicore:wsauth:blocked:"  # + address: refused until the epoch second it holds (expires then)
FAILURE_WINDOW_S = 60
AUTH_FIRST = 'send {"type": "auth", "api_key": "..."} first, or the key in the handshake headers'


@dataclass(frozen=True)
class WsLimits:
    """The settings of sockets before and after auth (core/settings.py: WS_*)."""

    auth_frame_bytes: int = 4096
    max_frame_bytes: int = 1_048_576
    auth_timeout_s: float = 10
    unauthenticated_per_address: int = 16
    unauthenticated_total: int = 256
    auth_failures: int = 5  # in FAILURE_WINDOW_S; 0: never refused
    auth_block_s: float = 60

    @classmethod
    def from_settings(cls, settings: Any) -> "WsLimits":
        return cls(settings.ws_auth_frame_bytes, settings.ws_max_frame_bytes, settings.ws_auth_timeout_s,
                   settings.ws_unauthenticated_per_address, settings.ws_unauthenticated_total,
                   settings.ws_auth_failures, settings.ws_auth_block_s)


class Refused(Exception):
    """The socket is closed with `code` and `reason` (at most 123 bytes), after an error message."""

    def __init__(self, code: int, reason: str, error: AICoreError):
        super().__init__(reason)
        self.code, self.reason, self.error = code, reason, error


class WsGate:
    """One ingress replica's sockets before auth. The caps are this replica's memory (a socket is
    held by one replica, and what they protect is its event loop and Ray's proxy): per client
    address and in total. Failed authentications are counted per address in the shared store
    (Redis when set: every replica sees them); at WS_AUTH_FAILURES in a minute the address's new
    sockets are refused for WS_AUTH_BLOCK_S. Store trouble never refuses: the key check follows."""

    def __init__(self, limits: WsLimits, store: Any = None):
        self.limits = limits
        self.store = store
        self.pending: dict[str, int] = {}  # address: sockets not yet authenticated
        self.total = 0

    async def enter(self, address: Optional[str]) -> None:
        """Count a new socket as unauthenticated, or raise Refused (then nothing is counted)."""
        where = address or "unknown"
        if self.total >= self.limits.unauthenticated_total:
            raise Refused(TRY_AGAIN_LATER, "server busy: too many unauthenticated sockets", Overloaded(
                "the server holds too many sockets that have not authenticated yet: retry shortly",
                code="too_many_unauthenticated_sockets"))
        if self.pending.get(where, 0) >= self.limits.unauthenticated_per_address:
            raise Refused(POLICY_VIOLATION, "too many unauthenticated sockets from this address", RateLimited(
                f"at most {self.limits.unauthenticated_per_address} sockets from one address may wait for "
                "authentication at once", code="too_many_unauthenticated_sockets"))
        self.total += 1
        self.pending[where] = self.pending.get(where, 0) + 1
        try:
            await self._not_blocked(where)
        except BaseException:
            self.leave(address)
            raise

    def leave(self, address: Optional[str]) -> None:
        """The socket authenticated, failed or left."""
        where = address or "unknown"
        self.total -= 1
        left = self.pending.get(where, 1) - 1
        if left > 0:
            self.pending[where] = left
        else:
            self.pending.pop(where, None)

    async def _not_blocked(self, where: str) -> None:
        if not self.limits.auth_failures or self.store is None:
            return
        try:
            until = await self.store.get(_BLOCKED + where)
        except Exception as error:  # StoreUnavailable: the key check decides alone
            logger.debug("could not read the address's auth failures: %s", type(error).__name__)
            return
        if until is not None:
            retry = max(1, math.ceil(float(until) - time.time()))
            raise Refused(POLICY_VIOLATION, f"too many failed authentications from this address: retry in {retry} s",
                          RateLimited(f"too many failed authentications from this address: retry in {retry} s",
                                      retry_after_s=retry, code="too_many_auth_failures"))

    async def failed(self, address: Optional[str]) -> None:
        """One failed authentication from `address`; at the limit the address is refused for a while."""
        if not self.limits.auth_failures or self.store is None:
            return
        where = address or "unknown"
        try:
            count = await self.store.incr_window(_FAILURES + where, 1, FAILURE_WINDOW_S)
            if count >= self.limits.auth_failures:
                block_s = max(1.0, self.limits.auth_block_s)
                await self.store.set(_BLOCKED + where, str(time.time() + block_s), ttl_s=block_s)
                if count == self.limits.auth_failures:
                    logger.warning("WebSocket authentications from %s refused for %gs after %d failures",
                                   where, block_s, count)
        except Exception as error:
            logger.debug("could not count an auth failure: %s", type(error).__name__)
