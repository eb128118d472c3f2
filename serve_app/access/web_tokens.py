"""Web tokens: what makes a key one, and the minting key's bounds on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from core.errors import InvalidRequest
from serve_app.access.key_record import StoredKey
from serve_app.protocol.keys import WEB_TOKEN_MAX_TTL_S, KeyCreate, WebTokenCreate


@dataclass(frozen=True)
class Minter:
    """The managed key minting a web token, as far as the token is bounded by it: its models, its
    effective requests and tokens per minute (0: unlimited), its expiry and its priority."""

    key_id: str
    models: Optional[frozenset[str]]  # None: every model
    requests_per_minute: int
    tokens_per_minute: int
    expires_at: Optional[int] = None
    priority: str = "interactive"
    quotas: Optional[dict[str, int]] = None  # its quota fields: its tokens count against them

    def may_use(self, name: str) -> bool:
        return self.models is None or name in self.models

    def bound(self, spec: WebTokenCreate, key: KeyCreate) -> KeyCreate:
        """`key` within the minter's limits: a limit asked above the minter's is a 400, one left out
        is the default or the minter's, whichever is lower; the expiry and priority follow the minter."""
        changes: dict = {}
        for field, own in (("rate_limit_per_minute", self.requests_per_minute),
                           ("tokens_per_minute", self.tokens_per_minute)):
            asked = getattr(key, field)
            if own and asked > own:
                if field in spec.model_fields_set:
                    raise InvalidRequest(f"{field} {asked} is above the minting key's own ({own})", param=field)
                changes[field] = own
        if self.expires_at is not None:  # a token never outlives its minter
            changes["expires_in_s"] = max(1, min(key.expires_in_s, self.expires_at - int(time.time())))
        if self.priority == "batch":
            changes["priority"] = "batch"
        return key.model_copy(update=changes)


def check_web_token(record: StoredKey, error: type = InvalidRequest) -> None:
    """What makes a web token one, at minting (400) and after any change (409: the key's kind refuses it)."""
    if set(record.scopes) != {"inference"}:
        raise error("a web token has the inference scope only", param="scopes")
    if not record.models:
        raise error("a web token names the models it may use", param="models")
    if not record.rate_limit_per_minute or not record.tokens_per_minute:
        raise error("a web token has its own requests and tokens per minute (above 0)",
                    param="rate_limit_per_minute" if not record.rate_limit_per_minute else "tokens_per_minute")
    if record.expires_at is None or record.expires_at > time.time() + WEB_TOKEN_MAX_TTL_S:
        raise error(f"a web token expires within {WEB_TOKEN_MAX_TTL_S} s", param="expires_at")
