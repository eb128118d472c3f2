"""Typed errors. Each carries its HTTP status, OpenAI error type, param and code.

They are raised anywhere (ingress or model replica); Ray re-raises a replica's
exception in the caller as a subclass of the original, so `isinstance` still works,
and `serve_app.http.errors` turns any of them into one OpenAI error body.
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

    def __reduce__(self):  # keep param/code when pickled across Ray
        return (_rebuild, (type(self), self.message, self.param, self.code))


def _rebuild(cls, message, param, code):
    return cls(message, param=param, code=code)


class InvalidRequest(AICoreError):
    status, type = 400, "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class PromptTooLong(AICoreError):
    status, type, code = 413, "invalid_request_error", "prompt_too_long"


class AuthenticationFailed(AICoreError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotFound(AICoreError):
    """A model that does not exist, or one outside the key's `models`: the same answer for both
    (OpenAI's words), so a key cannot learn which models exist beyond its own."""

    status, type, code = 404, "invalid_request_error", "model_not_found"

    @classmethod
    def named(cls, name: str) -> "ModelNotFound":
        return cls(f"The model `{name}` does not exist or you do not have access to it.", param="model")


class SessionNotFound(AICoreError):
    status, type, code = 404, "invalid_request_error", "session_not_found"


class SessionBusy(AICoreError):
    """A turn of a session while another turn of it is being answered: answered from the history
    as it stands, one of the two turns would be lost or contradict the other."""

    status, type, code = 409, "invalid_request_error", "session_busy"


class ModelUnavailable(AICoreError):
    """The model cannot answer now (not schedulable, loading too long, failed)."""

    status, type, code = 503, "server_error", "model_unavailable"


class ModelUnloaded(ModelUnavailable):
    """An administrator's forced unload stopped this request; the next request loads the model again."""

    code = "model_unloaded"


class ModelDisabled(ModelUnavailable):
    """An administrator unloaded the model with `disable`; only an explicit load enables it."""

    code = "model_disabled"


class InsufficientMemory(AICoreError):
    """Loading the model would pass the node's model memory budget."""

    status, type, code = 409, "insufficient_memory", "model_memory_budget_exceeded"


class BackendFailure(AICoreError):
    """The engine failed; the message sent to the client stays generic."""

    status, type, code = 500, "server_error", "backend_error"


class PermissionDenied(AICoreError):
    """Credentials were presented but are wrong for this resource (e.g. a webhook secret)."""

    status, type, code = 403, "permission_error", "permission_denied"


class NotEnabled(AICoreError):
    """A feature that configuration leaves off (e.g. the Telegram webhook without a secret)."""

    status, type, code = 404, "invalid_request_error", "not_enabled"


class RequestCancelled(AICoreError):
    """The client withdrew the request (a WebSocket `cancel`); nginx's 499 "client closed request"."""

    status, type, code = 499, "invalid_request_error", "cancelled"


class Overloaded(AICoreError):
    """Every slot is busy and the waiting room is full (or the wait would pass the timeout):
    answered at once with 503 and a Retry-After computed from the queue, never a silent wait."""

    status, type, code = 503, "overloaded_error", "model_overloaded"

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 retry_after: int = 1):
        super().__init__(message, param=param, code=code)
        self.retry_after = max(1, int(retry_after))

    @property
    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)}

    def __reduce__(self):
        return (_rebuild_overloaded, (type(self), self.message, self.param, self.code, self.retry_after))


def _rebuild_overloaded(cls, message, param, code, retry_after):
    return cls(message, param=param, code=code, retry_after=retry_after)
