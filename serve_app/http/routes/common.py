"""Bits every generation route shares: per-request options, cache headers, the streamed 200's docs."""

from __future__ import annotations

from typing import Optional

from fastapi import Request

from serve_app.access.auth import Principal
from serve_app.generation import Generation
from serve_app.serving import RequestOptions


def request_options(request: Request, principal: Principal, endpoint: str, cache: Optional[bool] = None,
                    session_id: Optional[str] = None) -> RequestOptions:
    settings = request.app.state.settings
    no_cache = "no-cache" in request.headers.get("cache-control", "").lower()
    tenant = "shared" if settings.cache_shared_across_keys else principal.key_id
    return RequestOptions(endpoint=endpoint, tenant=tenant, cache=cache, no_cache=no_cache, session_id=session_id,
                          owner=principal.key_id)


def cache_headers(generation: Generation) -> dict[str, str]:
    return {"X-Cache": generation.cache.upper()} if generation.cache else {}


def streamed(model: type, example: str) -> dict:
    """OpenAPI `responses` of an endpoint whose 200 is `model` as JSON or, with `"stream": true`,
    Server-Sent Events (`example`)."""
    return {200: {"model": model, "description": "JSON; with `\"stream\": true`, Server-Sent Events ending in "
                  "`data: [DONE]`.", "content": {"text/event-stream": {"example": example}}}}
