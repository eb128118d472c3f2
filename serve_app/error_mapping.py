"""Every exception to one AICoreError and one OpenAI-style error body: the mapping all channels share
(HTTP answers and SSE events in serve_app/http/errors.py; WebSocket messages, batch items and jobs)."""

from __future__ import annotations

import asyncio
import logging

from fastapi.exceptions import RequestValidationError

from core.errors import AICoreError, InvalidRequest, ModelUnavailable, Overloaded
from core.logs import request_id_var

logger = logging.getLogger("aicore.errors")


def _ray_unavailable(exc: BaseException) -> bool:
    try:
        from ray.serve.exceptions import DeploymentUnavailableError
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return isinstance(exc, DeploymentUnavailableError)


def _ray_backpressure(exc: BaseException) -> bool:
    """Ray Serve refused the request at the handle: the deployment's `max_queued_requests` is full."""
    try:
        from ray.serve.exceptions import BackPressureError
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return isinstance(exc, BackPressureError)


def to_aicore_error(exc: BaseException) -> AICoreError:
    """Classify by type (Ray re-raises a replica's AICoreError as a subclass of it)."""
    if isinstance(exc, AICoreError):
        return exc
    if _ray_backpressure(exc):
        return Overloaded("the model is overloaded: every replica's queue is full; retry later", retry_after_s=5)
    if _ray_unavailable(exc) or isinstance(exc, asyncio.TimeoutError):
        return ModelUnavailable("the model is not available right now; retry shortly")
    logger.error("unhandled error", exc_info=(type(exc), exc, exc.__traceback__))
    return AICoreError("internal server error")


def log_debug(exc: BaseException, error: AICoreError) -> None:
    """DEBUG=true: every error answer in the log, a 5xx with its traceback (an unhandled exception
    was logged with its traceback at ERROR already). The response body never carries either."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    unhandled = not isinstance(exc, AICoreError) and error.code is None and error.status == 500
    trace = (type(exc), exc, exc.__traceback__) if error.status >= 500 and not unhandled else None
    logger.debug("error answer %s %s: %s", error.status, error.code or error.type, error.message, exc_info=trace)


def error_body(error: AICoreError) -> dict:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
            "request_id": request_id_var.get(),
        }
    }


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequest(f"malformed JSON body: {first.get('msg')}", code="invalid_json")
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":  # OpenAI's words for a field it does not know
        return InvalidRequest(f"unrecognized request argument supplied: {param}", param=param,
                              code="unknown_parameter")
    return InvalidRequest(f"{param or 'body'}: {first.get('msg')}", param=param, code="invalid_value")
