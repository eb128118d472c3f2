"""Per-key rate limits: requests and tokens per minute, shared by every ingress replica.

Each limit is one counter in the store; its window opens with the first request and lasts
60 s. Admission is one atomic store call (`take_window`, one Lua script in Redis): it counts
the request and reserves the request's most tokens (prompt + `max_tokens`) in the same step,
so concurrent requests cannot all pass a token limit that only one of them fits. When the
request ends, `settle` turns the reservation into the tokens really used (a refused or failed
request gives its reservation back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from core.access_errors import RateLimited
from serve_app.state.store import Store

WINDOW_S = 60
_PREFIX = "aicore:ratelimit:"
_OVER_REQUESTS, _OVER_TOKENS = 1, 2


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


class RateLimiter:
    def __init__(self, store: Store, default_rpm: int, default_tpm: int):
        self.store = store
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm

    def limits(self, rpm: Optional[int], tpm: Optional[int]) -> Limits:
        return Limits(self.default_rpm if rpm is None else rpm, self.default_tpm if tpm is None else tpm)

    @staticmethod
    def _keys(key_id: str) -> tuple[str, str]:
        return _PREFIX + key_id + ":requests", _PREFIX + key_id + ":tokens"

    async def admit(self, key_id: str, limits: Limits, reserve: int = 0) -> Reservation:
        """Count one request and reserve `reserve` tokens; raises RateLimited (with the headers) when over."""
        if not limits.requests and not limits.tokens:
            return Reservation(key_id, limits)
        requests_key, tokens_key = self._keys(key_id)
        reserve = max(0, reserve) if limits.tokens else 0
        used, reset_s, tokens, tokens_reset_s, verdict = await self.store.take_window(
            requests_key, tokens_key, limits.requests, limits.tokens, reserve, WINDOW_S)
        headers: dict[str, str] = {}
        if limits.requests:
            headers.update({
                "x-ratelimit-limit-requests": str(limits.requests),
                "x-ratelimit-remaining-requests": str(max(0, limits.requests - used)),
                "x-ratelimit-reset-requests": reset_text(reset_s),
            })
        if limits.tokens:
            headers.update({
                "x-ratelimit-limit-tokens": str(limits.tokens),
                "x-ratelimit-remaining-tokens": str(max(0, limits.tokens - tokens)),
                "x-ratelimit-reset-tokens": reset_text(tokens_reset_s),
            })
        if verdict == _OVER_REQUESTS:
            raise RateLimited(
                f"Rate limit reached for requests on key {key_id}: limit {limits.requests} per minute. "
                f"Please try again in {reset_text(reset_s)}.", kind="requests", retry_after_s=math.ceil(reset_s),
                headers=headers)
        if verdict == _OVER_TOKENS:
            raise RateLimited(
                f"Rate limit reached for tokens on key {key_id}: limit {limits.tokens} per minute, used {tokens}, "
                f"this request may need {reserve}. Please try again in {reset_text(tokens_reset_s)}.",
                kind="tokens", retry_after_s=math.ceil(tokens_reset_s), headers=headers)
        return Reservation(key_id, limits, reserve, headers)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """The request is over: its real tokens replace its reservation in the window."""
        if reservation.limits.tokens:
            await self.store.settle_window(self._keys(reservation.key_id)[1], used_tokens - reservation.tokens,
                                           WINDOW_S)
        reservation.tokens = used_tokens  # settling twice changes nothing
