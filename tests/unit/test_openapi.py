import json

from scripts.export_openapi import TARGET, openapi_text


def test_committed_openapi_is_current():
    assert TARGET.read_text() == openapi_text(), "run: .venv/bin/python -m scripts.export_openapi"


def test_openapi_lists_every_route():
    paths = json.loads(openapi_text())["paths"]
    assert {"/api/v1/generate", "/api/v1/chat", "/api/v1/models", "/api/v1/health", "/api/v1/health/ready",
            "/api/v1/metrics", "/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(paths)
    assert "503" in paths["/api/v1/health/ready"]["get"]["responses"]
