"""The FastAPI application factory: composes protocol, routes, auth, errors and metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from serve_app.auth import Authenticator
from serve_app.cache import ResponseCache
from serve_app.errors import install_error_handlers
from serve_app.guard import GuardMiddleware
from serve_app.keys import KeyService
from serve_app.metrics import MetricsRecorder
from serve_app.middleware import RequestContextMiddleware
from serve_app.ratelimit import RateLimiter
from serve_app.routes import api_v1, keys, openai
from serve_app.serving import GenerationService, ModelRouter
from serve_app.settings import Settings
from serve_app.status import ModelStatus
from serve_app.sessions import SessionStore
from serve_app.store import make_store


def create_app(settings: Settings, router: ModelRouter, metrics_hub: Any, model_status: ModelStatus) -> FastAPI:
    app = FastAPI(title="AI Core", version="0.1.0", description="Self-hosted model serving on Ray Serve.")
    app.state.settings = settings
    app.state.router = router
    metrics = app.state.metrics = MetricsRecorder(metrics_hub, settings.metrics_flush_s)
    app.state.store = store = make_store(settings.redis_url, on_error=lambda: metrics.count("store_errors"))
    app.state.sessions = SessionStore(store, settings.session_ttl_s)
    cache = None
    if settings.cache_enabled:
        cache = ResponseCache(store, settings.cache_ttl_s, on_write=lambda n: metrics.count("cache_bytes", n))
    app.state.generation = GenerationService(router, settings, cache, app.state.sessions)
    app.state.model_status = model_status
    app.state.keys = KeyService(store, router.entries)
    app.state.limiter = RateLimiter(store, settings.rate_limit_per_minute, settings.tokens_per_minute)
    app.state.auth = Authenticator(
        settings.bootstrap_keys(), settings.api_key_header, app.state.keys, store, settings.store_failure_mode,
    )
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.include_router(api_v1.router)
    app.include_router(openai.router)
    app.include_router(keys.router)
    app.add_middleware(GuardMiddleware, settings=settings, keys=app.state.keys, limiter=app.state.limiter)
    app.add_middleware(RequestContextMiddleware, record=app.state.metrics.record)
    return app
