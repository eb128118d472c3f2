"""Typed errors of access control: keys, scopes, models, addresses, rate limits, input policy.

`serve_app.http.errors` maps them (like every AICoreError) to one OpenAI error body; an error
with `headers` (Retry-After on a 429) hands them to the response.
"""

from __future__ import annotations

from typing import Optional

from core.errors import AICoreError, AuthenticationFailed, InvalidRequest


class KeyRevoked(AuthenticationFailed):
    code = "key_revoked"


class KeyExpired(AuthenticationFailed):
    code = "key_expired"


class KeyDisabled(AuthenticationFailed):
    code = "key_disabled"


class PermissionDenied(AICoreError):
    status, type, code = 403, "permission_error", "insufficient_scope"


class AddressNotAllowed(PermissionDenied):
    code = "ip_not_allowed"


class KeyNotFound(AICoreError):
    status, type, code = 404, "invalid_request_error", "key_not_found"


class KeyConflict(AICoreError):
    """The key's state refuses the change (a revoked key cannot be rotated), or its record kept
    changing under an update (many concurrent changes of one key)."""

    status, type, code = 409, "invalid_request_error", "key_conflict"


class RateLimited(AICoreError):
    """429 as OpenAI sends it: type `requests` or `tokens`, code `rate_limit_exceeded`."""

    status, code = 429, "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str = "requests", retry_after_s: int = 1,
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message, param=param, code=code)
        self.type = kind
        self.retry_after_s = max(1, int(retry_after_s))
        self.headers = {**(headers or {}), "Retry-After": str(self.retry_after_s)}

    def __reduce__(self):
        return (RateLimited, (self.message,), {"type": self.type, "retry_after_s": self.retry_after_s,
                                               "headers": self.headers})


class QuotaExceeded(RateLimited):
    """429 once a key's daily or monthly token or request quota is used up: type `quota`, code
    `quota_exceeded`; `param` names the quota (`tokens-day`, ...), Retry-After says when it resets."""

    code = "quota_exceeded"
    used_ratio = 1.0  # the share of the quota used (the admission sets it)

    def __init__(self, message: str, *, quota: str = "", retry_after_s: int = 1, headers: Optional[dict] = None):
        super().__init__(message, kind="quota", retry_after_s=retry_after_s, param=quota, headers=headers)

    def __reduce__(self):
        return (QuotaExceeded, (self.message,), {"type": self.type, "param": self.param,
                                                 "retry_after_s": self.retry_after_s, "headers": self.headers})


class BodyTooLarge(AICoreError):
    status, type, code = 413, "invalid_request_error", "body_too_large"


class BodyTimeout(AICoreError):
    """The request body did not arrive whole within BODY_TIMEOUT_S: 408, and the connection is
    closed (the rest of the body would otherwise be read as the next request)."""

    status, type, code = 408, "invalid_request_error", "body_timeout"
    headers = {"Connection": "close"}


class ContentFiltered(InvalidRequest):
    type, code = "content_filter", "content_filter"


class TooManyMessages(InvalidRequest):
    code = "too_many_messages"
