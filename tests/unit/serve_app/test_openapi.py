import json

from pydantic import BaseModel

from scripts.export_openapi import TARGET, openapi_text
from serve_app.batch.service import parse_item
from serve_app.protocol import api_v1, audit, batch, batch_jobs, errors, keys, openai, telegram


def test_committed_openapi_is_current():
    assert TARGET.read_text() == openapi_text(), "run: .venv/bin/python -m scripts.export_openapi"


def test_openapi_lists_every_route():
    paths = json.loads(openapi_text())["paths"]
    assert {"/api/v1/generate", "/api/v1/chat", "/api/v1/models", "/api/v1/health", "/api/v1/health/ready",
            "/api/v1/metrics", "/v1/chat/completions", "/v1/completions", "/v1/models",
            "/api/v1/generate/batch", "/api/v1/generate/batch/jobs", "/api/v1/generate/batch/jobs/{job_id}",
            "/api/v1/generate/batch/jobs/{job_id}/cancel"} <= set(paths)
    assert "202" in paths["/api/v1/generate/batch/jobs"]["post"]["responses"]
    assert "503" in paths["/api/v1/health/ready"]["get"]["responses"]


def _resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _has_example(spec: dict, media: dict) -> bool:
    """An example on the media type itself, or on the schema it names."""
    schema = _resolve(spec, media.get("schema", {}))
    return bool(media.get("example") or media.get("examples") or schema.get("examples"))


def _operations(spec: dict):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_request_body_has_an_example():
    spec = json.loads(openapi_text())
    bodies = {name: op["requestBody"]["content"] for name, op in _operations(spec) if "requestBody" in op}
    assert len(bodies) >= 10
    missing = [f"{name} ({ctype})" for name, content in bodies.items() for ctype, media in content.items()
               if not _has_example(spec, media)]
    assert not missing, f"request bodies without an example: {missing}"


def test_every_successful_response_has_an_example():
    """Each 2xx answer, in every content type it is documented with (JSON, SSE, Prometheus text)."""
    spec = json.loads(openapi_text())
    checked, missing = 0, []
    for name, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if not status.startswith("2"):
                continue
            for ctype, media in response.get("content", {}).items():
                checked += 1
                if not _has_example(spec, media):
                    missing.append(f"{name} {status} ({ctype})")
    assert checked >= len(spec["paths"])
    assert not missing, f"responses without an example: {missing}"


def _protocol_models() -> dict[str, type[BaseModel]]:
    models = {}
    for module in (api_v1, audit, batch, batch_jobs, errors, keys, openai, telegram):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                models[name] = value
    return models


def test_schema_examples_are_valid_requests_and_responses():
    """Every example in components/schemas parses as its pydantic model (batch items as items)."""
    spec = json.loads(openapi_text())
    models = _protocol_models()
    validated = 0
    for name, schema in spec["components"]["schemas"].items():
        for example in schema.get("examples", []):
            models[name.removesuffix("-Input").removesuffix("-Output")].model_validate(example)
            validated += 1
    assert validated >= 20
    for example in spec["components"]["schemas"]["BatchRequest"]["examples"]:
        for item in example["items"]:
            parse_item(item, example.get("format"))


def test_streamed_examples_end_with_one_done_event():
    spec = json.loads(openapi_text())
    streams = [media["example"] for _, op in _operations(spec) for response in op["responses"].values()
               for ctype, media in response.get("content", {}).items() if ctype == "text/event-stream"]
    assert len(streams) == 4  # /api/v1/generate, /api/v1/chat, /v1/completions, /v1/chat/completions
    for text in streams:
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and text.count("[DONE]") == 1
        assert all(json.loads(e.removeprefix("data: ")) for e in events[:-1])
