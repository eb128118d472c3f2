"""Per-key rate limits: requests and tokens per minute, shared by every ingress replica.

Each limit is one counter in the store; its window opens with the first request and lasts
60 s. Admission is one atomic store call (`take_window`, one Lua script in Redis): it counts
the request and reserves the request's most tokens (prompt + `max_tokens`) in the same step,
so concurrent requests cannot all pass a token limit that only one of them fits. When the
request ends, `settle` turns the reservation into the tokens really used (a refused or failed
request gives its reservation back, to the window that holds it: a request that outlived its
window gives nothing back to the next one, and no window's count goes below zero).
The key's quotas (serve_app/access/usage.py) are checked in the same store call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

from core.errors import QuotaExceeded, RateLimited
from serve_app.access.usage import QuotaClock, QuotaState, quota_headers
from serve_app.state.store import Store

WINDOW_S = 60
# A reservation is given back only while its window has this much time left: the give-back must
# reach Redis before the window expires, or it would credit the window that follows.
SETTLE_MARGIN_S = 1.0
_PREFIX = "aicore:ratelimit:"
_OVER_REQUESTS, _OVER_TOKENS, _OVER_QUOTA = 1, 2, 3


def reset_text(seconds: float) -> str:
    """OpenAI's duration format: `1s`, `6m0s`."""
    whole = max(1, math.ceil(seconds))
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60}s"


@dataclass(frozen=True)
class Limits:
    requests: int  # 0: unlimited
    tokens: int


@dataclass
class Reservation:
    """What one admitted request holds: its reserved tokens, and the x-ratelimit-* headers."""

    key_id: str
    limits: Limits
    tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    window_ends: float = 0.0  # time.monotonic() when the first window holding `tokens` expires
    token_keys: list[str] = field(default_factory=list)  # the tokens windows that hold them
    quota_used: list[tuple[str, float]] = field(default_factory=list)  # (quota name, share used) at admission


@dataclass(frozen=True)
class Pool:
    """Windows a request counts in besides its key's own: a web token's share of its minter's
    budget, or of the tokens one client address got from that minter."""

    name: str  # the windows' name (keys aicore:ratelimit:<name>:requests and :tokens)
    limits: Limits
    what: str  # how a refusal names it


class RateLimiter:
    def __init__(self, store: Store, default_rpm: int, default_tpm: int, clock: Optional[QuotaClock] = None):
        self.store = store
        self.clock = clock or QuotaClock()
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm

    def limits(self, rpm: Optional[int], tpm: Optional[int]) -> Limits:
        return Limits(self.default_rpm if rpm is None else rpm, self.default_tpm if tpm is None else tpm)

    @staticmethod
    def _keys(key_id: str) -> tuple[str, str]:
        return _PREFIX + key_id + ":requests", _PREFIX + key_id + ":tokens"

    async def admit(self, key_id: str, limits: Limits, reserve: int = 0, pools: tuple[Pool, ...] = (),
                    quotas: list[QuotaState] = (), whose: str = "") -> Reservation:
        """Check the quotas (of `whose` key: a web token's are its minter's), count one request
        and reserve `reserve` tokens in the key's windows and in each pool's, all or nothing;
        raises QuotaExceeded or RateLimited (with the key's headers) when any is over."""
        pools = tuple(p for p in pools if p.limits.requests or p.limits.tokens)
        if not limits.requests and not limits.tokens and not pools and not quotas:
            return Reservation(key_id, limits)
        owners = [(key_id, limits, f"key {key_id}")] + [(p.name, p.limits, p.what) for p in pools]
        reserve = max(0, reserve) if any(l.tokens for _, l, _ in owners) else 0
        windows = [(*self._keys(name), l.requests, l.tokens) for name, l, _ in owners]
        checks = [state.check for state in quotas]
        verdict, which, used, counted = await self.store.take_window(windows, reserve, WINDOW_S, checks)
        requests, reset_s, tokens, tokens_reset_s = used[0]
        now = time.time()
        headers = quota_headers(list(quotas), counted, now)
        if limits.requests:
            headers.update({
                "x-ratelimit-limit-requests": str(limits.requests),
                "x-ratelimit-remaining-requests": str(max(0, limits.requests - requests)),
                "x-ratelimit-reset-requests": reset_text(reset_s),
            })
        if limits.tokens:
            headers.update({
                "x-ratelimit-limit-tokens": str(limits.tokens),
                "x-ratelimit-remaining-tokens": str(max(0, limits.tokens - tokens)),
                "x-ratelimit-reset-tokens": reset_text(tokens_reset_s),
            })
        if verdict == _OVER_QUOTA:
            raise self._over_quota(quotas[which], counted[which], whose or key_id, now, headers)
        if verdict:
            _, over, what = owners[which]
            requests, reset_s, tokens, tokens_reset_s = used[which]
        if verdict == _OVER_REQUESTS:
            raise RateLimited(
                f"Rate limit reached for requests on {what}: limit {over.requests} per minute. "
                f"Please try again in {reset_text(reset_s)}.", kind="requests", retry_after_s=math.ceil(reset_s),
                headers=headers)
        if verdict == _OVER_TOKENS:
            raise RateLimited(
                f"Rate limit reached for tokens on {what}: limit {over.tokens} per minute, used {tokens}, "
                f"this request may need {reserve}. Please try again in {reset_text(tokens_reset_s)}.",
                kind="tokens", retry_after_s=math.ceil(tokens_reset_s), headers=headers)
        held = [window[1] for window in windows if window[3]]
        ends = min((u[3] for u, window in zip(used, windows) if window[3]), default=float(WINDOW_S))
        shares = [(state.quota.name, count / state.quota.limit) for state, count in zip(quotas, counted)]
        return Reservation(key_id, limits, reserve if held else 0, headers, time.monotonic() + ends, held, shares)

    def _over_quota(self, state: QuotaState, used: int, whose: str, now: float, headers: dict) -> QuotaExceeded:
        quota, wait_s = state.quota, state.resets_at - now
        error = QuotaExceeded(
            f"{quota.title()} of key {whose} reached: limit {quota.limit}, used {used}. It resets at "
            f"{self.clock.iso(state.resets_at)} (in {math.ceil(wait_s)}s).", quota=quota.name,
            retry_after_s=math.ceil(wait_s), headers=headers)
        error.used_ratio = used / quota.limit  # for the gauge: a refusal is at 1 or more
        return error

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """The request is over: its real tokens replace its reservation in every window that holds it."""
        amount = used_tokens - reservation.tokens
        if amount < 0 and time.monotonic() >= reservation.window_ends - SETTLE_MARGIN_S:
            amount = 0  # a window is gone (or going): the next one never held these tokens
        if reservation.token_keys and amount:
            await self.store.settle_window(reservation.token_keys, amount, WINDOW_S)
        reservation.tokens = used_tokens  # settling twice changes nothing
