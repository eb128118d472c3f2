"""The one place where any exception becomes an OpenAI-style error body."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import AICoreError, InvalidRequest, ModelUnavailable, Overloaded
from core.logs import request_id_var
from serve_app.access.refusals import record_if_admin_route
from serve_app.pipeline import Outcome

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


def _log_debug(exc: BaseException, error: AICoreError) -> None:
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


def _note(request: Optional[Request], error: AICoreError) -> None:
    """Hand the error's type and code to the metrics event (read by the middleware)."""
    if request is not None:
        outcome = Outcome.of(request)
        outcome.error_type, outcome.error_code = error.type, error.code


def error_response(exc: BaseException, request: Optional[Request] = None) -> JSONResponse:
    error = to_aicore_error(exc)
    _log_debug(exc, error)
    _note(request, error)
    headers = {"Retry-After": "5"} if error.status == 503 else None
    headers = getattr(error, "headers", None) or headers  # e.g. a 429's Retry-After
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def sse_error_event(exc: BaseException, request: Optional[Request] = None) -> str:
    error = to_aicore_error(exc)
    _log_debug(exc, error)
    _note(request, error)
    return f"data: {json.dumps(error_body(error))}\n\n"


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


def allowed_methods(request: Request) -> list[str]:
    """The methods the app documents for the request's path (its OpenAPI paths: the routes)."""
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]+\})", template))
        if re.fullmatch(pattern, request.url.path):
            return sorted(method.upper() for method in item)
    return []


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        error = validation_error(exc)
        await record_if_admin_route(request.scope, error)  # an admin request refused for its body or query
        return error_response(error, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        error = AICoreError(str(exc.detail))
        error.status, error.type = exc.status_code, kind
        response = error_response(error, request)
        response.headers.update(exc.headers or {})
        methods = allowed_methods(request) if exc.status_code == 405 else None
        if methods:  # Starlette's Allow names only the first route of the path: name them all
            response.headers["Allow"] = ", ".join(methods)
        return response

    @app.exception_handler(AICoreError)  # inside the middleware: the response gets X-Request-ID
    async def _ours(request: Request, exc: AICoreError):
        return error_response(exc, request)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception):
        return error_response(exc, request)
