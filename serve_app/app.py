"""The FastAPI application factory: composes protocol, routes, auth, errors and metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from serve_app.auth import KeyStore
from serve_app.errors import install_error_handlers
from serve_app.metrics import MetricsRecorder
from serve_app.middleware import RequestContextMiddleware
from serve_app.routes import api_v1, openai
from serve_app.serving import EmbeddingService, GenerationService, ModelRouter
from serve_app.settings import Settings
from serve_app.status import ModelStatus


def create_app(settings: Settings, router: ModelRouter, metrics_hub: Any, model_status: ModelStatus) -> FastAPI:
    app = FastAPI(title="AI Core", version="0.1.0", description="Self-hosted model serving on Ray Serve.")
    app.state.settings = settings
    app.state.router = router
    app.state.generation = GenerationService(router, settings)
    app.state.embeddings = EmbeddingService(router, settings)
    app.state.keys = KeyStore(settings.bootstrap_keys(), settings.api_key_header)
    app.state.metrics = MetricsRecorder(metrics_hub, settings.metrics_flush_s)
    app.state.model_status = model_status
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.include_router(api_v1.router)
    app.include_router(openai.router)
    app.add_middleware(RequestContextMiddleware, record=app.state.metrics.record)
    return app
