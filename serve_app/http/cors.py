"""CORS from settings; a refused preflight answers with the OpenAI error body like any 4xx."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from core.errors import InvalidRequest
from serve_app.error_mapping import error_body


class ConfiguredCORS(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        message = bytes(response.body).decode("utf-8", "replace")  # e.g. "Disallowed CORS origin"
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        error = InvalidRequest(f"CORS preflight refused: {message}", code="cors_not_allowed")
        return JSONResponse(error_body(error), status_code=response.status_code, headers=headers)
