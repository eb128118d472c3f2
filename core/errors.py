"""Every error the product answers a client with, in one hierarchy under `AICoreError`.

Each class carries its HTTP status, OpenAI error type, and code (a `param` names the field at
fault). They are raised anywhere (ingress or model replica); Ray re-raises a replica's exception
in the caller as a subclass of the original, so `isinstance` still works, and
`serve_app.http.errors` turns any of them into one OpenAI error body (with the error's `headers`,
e.g. Retry-After). An error that tells the client when to retry says so in `retry_after_s`.
"""

from __future__ import annotations

from typing import Optional


class AICoreError(Exception):
    status: int = 500
    type: str = "server_error"
    code: Optional[str] = None

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self):
        # Ray pickles a replica's error to raise it in the ingress: rebuild it from its message and
        # keep every attribute set on it (param, an instance's code, retry_after_s, headers, ...).
        return (_rebuild, (type(self), self.message, self.param, self.code), dict(self.__dict__))


def _rebuild(cls, message, param=None, code=None):
    error = cls.__new__(cls)
    AICoreError.__init__(error, message, param=param, code=code)
    return error


def _rebuild_overloaded(cls, message, param, code, retry_after):
    # What a replica still running the previous release (during a deploy) pickles an Overloaded as.
    error = _rebuild(cls, message, param, code)
    error.retry_after_s = max(1, int(retry_after))
    return error


def _retry_headers(retry_after_s: int, headers: Optional[dict] = None) -> dict:
    return {**(headers or {}), "Retry-After": str(retry_after_s)}


# 400: the request itself is wrong.

class InvalidRequest(AICoreError):
    status, type = 400, "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ContentFiltered(InvalidRequest):
    type, code = "content_filter", "content_filter"


class TooManyMessages(InvalidRequest):
    code = "too_many_messages"


# 401 and 403: who is asking, and what they may do.

class AuthenticationFailed(AICoreError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class KeyRevoked(AuthenticationFailed):
    code = "key_revoked"


class KeyExpired(AuthenticationFailed):
    code = "key_expired"


class KeyDisabled(AuthenticationFailed):
    code = "key_disabled"


class PermissionDenied(AICoreError):
    """Credentials were accepted but may not do this: by default a key without the scope the
    operation needs; the subclasses are the other refusals clients see as 403."""

    status, type, code = 403, "permission_error", "insufficient_scope"


class AddressNotAllowed(PermissionDenied):
    code = "ip_not_allowed"


class WrongSecret(PermissionDenied):
    """Credentials were presented but are wrong for this resource (e.g. a webhook secret)."""

    code = "permission_denied"


# 404 and 409: what the request names.

class ModelNotFound(AICoreError):
    """A model that does not exist, or one outside the key's `models`: the same answer for both
    (OpenAI's words), so a key cannot learn which models exist beyond its own."""

    status, type, code = 404, "invalid_request_error", "model_not_found"

    @classmethod
    def named(cls, name: str) -> "ModelNotFound":
        return cls(f"The model `{name}` does not exist or you do not have access to it.", param="model")


class SessionNotFound(AICoreError):
    status, type, code = 404, "invalid_request_error", "session_not_found"


class KeyNotFound(AICoreError):
    status, type, code = 404, "invalid_request_error", "key_not_found"


class JobNotFound(AICoreError):
    """No such batch job, or one this key may not see (the same answer: ids are not confirmed to others)."""

    status, type, code = 404, "invalid_request_error", "batch_job_not_found"


class NotEnabled(AICoreError):
    """A feature that configuration leaves off (e.g. the Telegram webhook without a secret)."""

    status, type, code = 404, "invalid_request_error", "not_enabled"


class SessionBusy(AICoreError):
    """A turn of a session while another turn of it is being answered: answered from the history
    as it stands, one of the two turns would be lost or contradict the other."""

    status, type, code = 409, "invalid_request_error", "session_busy"


class KeyConflict(AICoreError):
    """The key's state refuses the change (a revoked key cannot be rotated), or its record kept
    changing under an update (many concurrent changes of one key)."""

    status, type, code = 409, "invalid_request_error", "key_conflict"


class InsufficientMemory(AICoreError):
    """Loading the model would pass the node's model memory budget."""

    status, type, code = 409, "insufficient_memory", "model_memory_budget_exceeded"


# 408, 413, 499: how the request arrived.

class BodyTimeout(AICoreError):
    """The request body did not arrive whole within BODY_TIMEOUT_S: 408, and the connection is
    closed (the rest of the body would otherwise be read as the next request)."""

    status, type, code = 408, "invalid_request_error", "body_timeout"
    headers = {"Connection": "close"}


class PromptTooLong(AICoreError):
    status, type, code = 413, "invalid_request_error", "prompt_too_long"


class BodyTooLarge(AICoreError):
    status, type, code = 413, "invalid_request_error", "body_too_large"


class RequestCancelled(AICoreError):
    """The client withdrew the request (a WebSocket `cancel`); nginx's 499 "client closed request"."""

    status, type, code = 499, "invalid_request_error", "cancelled"


# 429: the key's limits.

class RateLimited(AICoreError):
    """429 as OpenAI sends it: type `requests` or `tokens`, code `rate_limit_exceeded`."""

    status, code = 429, "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str = "requests", retry_after_s: int = 1,
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message, param=param, code=code)
        self.type = kind
        self.retry_after_s = max(1, int(retry_after_s))
        self.headers = _retry_headers(self.retry_after_s, headers)


class QuotaExceeded(RateLimited):
    """429 once a key's daily or monthly token or request quota is used up: type `quota`, code
    `quota_exceeded`; `param` names the quota (`tokens-day`, ...), Retry-After says when it resets."""

    code = "quota_exceeded"
    used_ratio = 1.0  # the share of the quota used (the admission sets it)

    def __init__(self, message: str, *, quota: str = "", retry_after_s: int = 1, headers: Optional[dict] = None):
        super().__init__(message, kind="quota", retry_after_s=retry_after_s, param=quota, headers=headers)


class TooManyBatchJobs(RateLimited):
    """The key has BATCH_JOBS_PER_KEY jobs queued or running already."""

    code = "too_many_batch_jobs"


class ResultQuotaExceeded(RateLimited):
    """The key's jobs stored BATCH_JOB_RESULT_BYTES_PER_KEY bytes of results in this window."""

    code = "batch_result_quota_exceeded"


# 500 and 503: the server side.

class BackendFailure(AICoreError):
    """The engine failed; the message sent to the client stays generic."""

    status, type, code = 500, "server_error", "backend_error"


class ModelUnavailable(AICoreError):
    """The model cannot answer now (not schedulable, loading too long, failed)."""

    status, type, code = 503, "server_error", "model_unavailable"


class ModelUnloaded(ModelUnavailable):
    """An administrator's forced unload stopped this request; the next request loads the model again."""

    code = "model_unloaded"


class ModelDisabled(ModelUnavailable):
    """An administrator unloaded the model with `disable`; only an explicit load enables it."""

    code = "model_disabled"


class Overloaded(AICoreError):
    """Every slot is busy and the waiting room is full (or the wait would pass the timeout):
    answered at once with 503 and a Retry-After computed from the queue, never a silent wait."""

    status, type, code = 503, "overloaded_error", "model_overloaded"

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 retry_after_s: int = 1):
        super().__init__(message, param=param, code=code)
        self.retry_after_s = max(1, int(retry_after_s))

    @property
    def headers(self) -> dict:
        return _retry_headers(self.retry_after_s)


class StoreUnavailable(AICoreError):
    """The shared store (Redis, or the state hub) cannot be reached."""

    status, type, code = 503, "server_error", "store_unavailable"
