"""The OpenAPI contract, in process: declared statuses, the running settings' limits, 405 with Allow."""

from __future__ import annotations

import asyncio

import httpx

from core.settings import Settings
from serve_app.app import create_app
from serve_app.http.routes.statuses import BODY, GENERATION, KEYED, responses_for
from serve_app.model_router import ModelRouter
from serve_app.ops.status import ModelStatus

KEY = "k" * 16
ERROR_REF = "#/components/schemas/ErrorResponse"


def _app(**settings):
    return create_app(Settings(api_keys=KEY, **settings), ModelRouter({}, "default"), None, ModelStatus(None, {}))


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_status_is_declared_with_the_error_body_and_none_is_blanket():
    spec = _app().openapi()
    for name, operation in _operations(spec):
        statuses = set(operation["responses"])
        assert "default" not in statuses and "422" not in statuses, name
        for status, response in operation["responses"].items():
            if int(status) >= 400 and not (name == "GET /api/v1/health/ready" and status == "503"):
                assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (name, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_statuses_follow_what_each_operation_can_raise():
    spec = _app().openapi()
    statuses = {name: set(op["responses"]) for name, op in _operations(spec)}
    assert statuses["GET /api/v1/health"] == {"200"}
    proxy = {"408", "431"}  # Ray's HTTP proxy answers a slow or oversized head before any route
    assert statuses["GET /v1/models"] == {"200", "401", "403", "429", "503"} | proxy
    assert statuses["POST /v1/chat/completions"] == {"200", "400", "401", "403", "404", "409", "413", "429", "500",
                                                     "503"} | proxy
    assert statuses["POST /api/v1/keys"] == {"201", "400", "401", "403", "413", "429", "503"} | proxy
    assert statuses["POST /api/v1/keys/{key_id}/rotate"] == {"200", "401", "403", "404", "409", "429", "503"} | proxy
    assert "401" not in statuses["GET /api/v1/health/ready"]
    keyed = {name for name, op in _operations(spec) if "security" in op}
    assert keyed == {name for name, codes in statuses.items() if "401" in codes} - {"POST /api/v1/webhooks/telegram"}
    described = responses_for(KEYED, GENERATION)
    assert "model_not_found" in described[404]["description"] and "Retry-After" in described[429]["headers"]
    assert set(responses_for(BODY)) == {400, 408, 413, 431}


def test_limits_come_from_the_running_settings():
    spec = _app(max_prompt_length=123, max_messages=7, batch_max_items=3, batch_job_max_items=9,
                ip_allowlist="10.0.0.0/8").openapi()
    schemas = spec["components"]["schemas"]
    assert schemas["GenerateRequest"]["properties"]["prompt"]["maxLength"] == 123
    assert schemas["ChatRequest"]["properties"]["messages"]["maxItems"] == 7
    assert schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] == 7
    content = schemas["ChatMessage"]["properties"]["content"]["anyOf"]
    assert content[0]["maxLength"] == 123
    assert schemas["BatchRequest"]["properties"]["items"]["maxItems"] == 3
    assert schemas["BatchJobRequest"]["properties"]["items"]["maxItems"] == 9
    prompt = schemas["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert prompt[0]["maxLength"] == 123 and (prompt[1]["minItems"], prompt[1]["maxItems"]) == (1, 1)
    embedding = schemas["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    assert embedding[0]["maxLength"] == 123 and embedding[1]["maxItems"] == 2048
    assert "x-limits" not in str(spec) and "x-model-names" not in str(spec)
    # IP_ALLOWLIST set: any operation may answer 403 ip_not_allowed
    assert all("403" in op["responses"] for _, op in _operations(spec))


def test_405_names_every_method_of_the_path():
    app = _app()

    async def calls():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.request(method, path) for method, path in
                    (("PUT", "/api/v1/keys/key-1"), ("DELETE", "/api/v1/generate"), ("POST", "/api/v1/health"))]

    answers = asyncio.run(calls())
    assert [r.status_code for r in answers] == [405, 405, 405]
    assert [r.headers["allow"] for r in answers] == ["DELETE, GET, PATCH", "POST", "GET"]
    assert all(r.json()["error"]["type"] == "invalid_request_error" for r in answers)
