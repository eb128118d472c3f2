"""The one place where any exception becomes an OpenAI-style error body."""

from __future__ import annotations

import json
import re
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import AICoreError
from serve_app.error_mapping import error_body, log_debug, to_aicore_error, validation_error
from serve_app.http.refusals import record_if_admin_route
from serve_app.pipeline import Outcome


def _note(request: Optional[Request], error: AICoreError) -> None:
    """Hand the error's type and code to the metrics event (read by the middleware)."""
    if request is not None:
        outcome = Outcome.of(request)
        outcome.error_type, outcome.error_code = error.type, error.code


def error_response(exc: BaseException, request: Optional[Request] = None) -> JSONResponse:
    error = to_aicore_error(exc)
    log_debug(exc, error)
    _note(request, error)
    headers = {"Retry-After": "5"} if error.status == 503 else None
    headers = getattr(error, "headers", None) or headers  # e.g. a 429's Retry-After
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def sse_error_event(exc: BaseException, request: Optional[Request] = None) -> str:
    error = to_aicore_error(exc)
    log_debug(exc, error)
    _note(request, error)
    return f"data: {json.dumps(error_body(error))}\n\n"


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
