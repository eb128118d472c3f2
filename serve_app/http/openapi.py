"""The OpenAPI document as this server runs: its settings' limits, its models, its key header.

FastAPI builds the document from the routes and protocol models; this finishes it, once, from
`app.state` (the running settings and model router; `scripts.export_openapi` uses the default
settings and no models, which is docs/openapi.json):
- limits the server enforces from settings (`schema_limits` markers: MAX_PROMPT_LENGTH,
  MAX_MESSAGES, BATCH_MAX_ITEMS, BATCH_JOB_MAX_ITEMS) become maxLength / maxItems;
- fields naming a model (`model_names` markers) list the configured models as their enum;
- FastAPI's automatic 422 goes: validation errors answer 400 (serve_app/error_mapping.py); error
  bodies are JSON on every route;
- operations that check a key declare the key header (API_KEY_HEADER) or a bearer token;
- with IP_ALLOWLIST set, every operation may answer 403 ip_not_allowed.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI

from serve_app.http.routes.statuses import KEY_MARK
from serve_app.protocol.errors import ErrorResponse

_SECURITY = [{"APIKeyHeader": []}, {"BearerToken": []}]
_ERROR_REF = {"$ref": "#/components/schemas/" + ErrorResponse.__name__}


def install_openapi(app: FastAPI) -> None:
    build = app.openapi  # FastAPI's own generator (it caches in app.openapi_schema)

    def openapi() -> dict:
        if app.openapi_schema is None:
            finish(build(), app)  # build() stored it in app.openapi_schema: finished in place, once
        return app.openapi_schema

    app.openapi = openapi


def finish(schema: dict, app: FastAPI) -> None:
    settings, router = app.state.settings, app.state.router
    _errors_as_json(schema)
    names = {
        "generate": [i for i in router.model_ids() if router.entries[i.partition(":")[0]].config.task == "generate"],
        "embed": [n for n, e in router.entries.items() if e.config.task == "embed"],
        "any": list(router.entries),
    }
    _walk(schema, lambda node: _resolve_markers(node, settings, names))
    _declare_keys(schema, settings.api_key_header)
    if settings.ip_allowlist:
        for operation in _operations(schema):
            operation["responses"].setdefault("403", {
                "description": "Error codes: ip_not_allowed", "content": {"application/json": {"schema": _ERROR_REF}},
            })


def _operations(schema: dict):
    for item in schema.get("paths", {}).values():
        yield from item.values()


def _errors_as_json(schema: dict) -> None:
    """Drop FastAPI's 422 (validation errors answer 400); error bodies are JSON even on a route
    whose success is text (FastAPI gives them the route's media type)."""
    for operation in _operations(schema):
        responses = operation.get("responses", {})
        responses.pop("422", None)
        for response in responses.values():
            if any(media.get("schema") == _ERROR_REF for media in response.get("content", {}).values()):
                response["content"] = {"application/json": {"schema": _ERROR_REF}}
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _walk(node: Any, visit: Callable[[dict], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _resolve_markers(node: dict, settings: Any, names: dict[str, list[str]]) -> None:
    for keyword, value in node.pop("x-limits", {}).items():
        _apply(node, keyword, getattr(settings, value) if isinstance(value, str) else value)
    task = node.pop("x-model-names", None)
    if task is not None and names[task]:  # no models (the exported document): any name
        _apply(node, "enum", names[task])


def _apply(node: dict, keyword: str, value: Any) -> None:
    """Put a string keyword on the string branches and an item count on the array branches."""
    for branch in node.get("anyOf", []) + node.get("oneOf", []):
        _apply(branch, keyword, value)
    kind = node.get("type")
    if kind == "string" and keyword in ("minLength", "maxLength", "enum"):
        node[keyword] = value
    elif kind == "array":
        if keyword in ("minItems", "maxItems"):
            node[keyword] = value
        elif isinstance(node.get("items"), dict):
            _apply(node["items"], keyword, value)


def _declare_keys(schema: dict, header: str) -> None:
    schema.setdefault("components", {})["securitySchemes"] = {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": header},
        "BearerToken": {"type": "http", "scheme": "bearer", "description": "The API key as a bearer token."},
    }
    for operation in _operations(schema):
        if operation.get("responses", {}).get("401", {}).pop(KEY_MARK, False):
            operation["security"] = _SECURITY
