"""Per-key rate limits: requests and tokens per minute, shared by every ingress replica.

Each limit is one counter in the store, bumped atomically (`incr_window`, one Lua script in
Redis); its window opens with the first request and lasts 60 s. A request is admitted when
the request count including it is within the limit, and when the tokens already used in the
window are below the token limit; its real tokens (prompt + completion) are added after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from serve_app.access_errors import RateLimited
from serve_app.store import Store

WINDOW_S = 60
_PREFIX = "aicore:ratelimit:"


def reset_text(seconds: float) -> str:
    """OpenAI's duration format: `1s`, `6m0s`."""
    whole = max(1, math.ceil(seconds))
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60}s"


@dataclass(frozen=True)
class Limits:
    requests: int  # 0: unlimited
    tokens: int


class RateLimiter:
    def __init__(self, store: Store, default_rpm: int, default_tpm: int):
        self.store = store
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm

    def limits(self, rpm: Optional[int], tpm: Optional[int]) -> Limits:
        return Limits(self.default_rpm if rpm is None else rpm, self.default_tpm if tpm is None else tpm)

    async def _window(self, key: str, amount: int) -> tuple[int, float]:
        used = await self.store.incr_window(key, amount, WINDOW_S)
        remaining_s = await self.store.ttl(key)
        return used, WINDOW_S if remaining_s is None else remaining_s

    async def admit(self, key_id: str, limits: Limits) -> dict[str, str]:
        """The x-ratelimit-* headers for this response; raises RateLimited (with them) when over."""
        headers: dict[str, str] = {}
        over: Optional[RateLimited] = None
        if limits.requests:
            used, reset_s = await self._window(_PREFIX + key_id + ":requests", 1)
            headers.update({
                "x-ratelimit-limit-requests": str(limits.requests),
                "x-ratelimit-remaining-requests": str(max(0, limits.requests - used)),
                "x-ratelimit-reset-requests": reset_text(reset_s),
            })
            if used > limits.requests:
                over = RateLimited(
                    f"Rate limit reached for requests on key {key_id}: limit {limits.requests} per minute. "
                    f"Please try again in {reset_text(reset_s)}.", kind="requests", retry_after_s=math.ceil(reset_s))
        if limits.tokens:
            used, reset_s = await self._window(_PREFIX + key_id + ":tokens", 0)
            headers.update({
                "x-ratelimit-limit-tokens": str(limits.tokens),
                "x-ratelimit-remaining-tokens": str(max(0, limits.tokens - used)),
                "x-ratelimit-reset-tokens": reset_text(reset_s),
            })
            if over is None and used >= limits.tokens:
                over = RateLimited(
                    f"Rate limit reached for tokens on key {key_id}: limit {limits.tokens} per minute, used {used}. "
                    f"Please try again in {reset_text(reset_s)}.", kind="tokens", retry_after_s=math.ceil(reset_s))
        if over is not None:
            over.headers.update(headers)
            raise over
        return headers

    async def add_tokens(self, key_id: str, limits: Limits, tokens: int) -> None:
        if limits.tokens and tokens > 0:
            await self.store.incr_window(_PREFIX + key_id + ":tokens", tokens, WINDOW_S)
