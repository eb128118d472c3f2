"""The FastAPI application factory: composes protocol, routes, auth, errors and metrics."""

from __future__ import annotations

import time
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from core.settings import Settings
from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.access.usage import QuotaClock
from serve_app.access.usage_buffer import UsageBuffer
from serve_app.batch.jobs import BatchJobService
from serve_app.batch.service import BatchService
from serve_app.http.cors import ConfiguredCORS
from serve_app.http.errors import install_error_handlers
from serve_app.http.guard import GuardMiddleware
from serve_app.http.middleware import RequestContextMiddleware
from serve_app.http.openapi import install_openapi
from serve_app.http.refusals import routes_in_order
from serve_app.http.routes import api_v1, audit, integrations, keys, openai, web
from serve_app.model_router import ModelRouter
from serve_app.ops.metrics import MetricsRecorder, QuotaEvent
from serve_app.ops.model_control import ModelControl
from serve_app.ops.status import ModelStatus
from serve_app.pipeline import Pipeline
from serve_app.serving import EmbeddingService, GenerationService
from serve_app.state.audit_log import AuditLog
from serve_app.state.cache import ResponseCache
from serve_app.state.chat_history import ChatHistory
from serve_app.state.sessions import SessionStore
from serve_app.state.shared_store import RemoteStore
from serve_app.state.store import make_store
from serve_app.telegram.access import TelegramAccess
from serve_app.telegram.bot import TelegramBot


def create_app(
    settings: Settings, router: ModelRouter, metrics_hub: Any, model_status: ModelStatus, chat_hub: Any = None,
    footprints: Optional[dict[str, Optional[int]]] = None,
) -> FastAPI:
    """`chat_hub`: the StateHub handle shared by ingress replicas (chat histories; batch jobs without
    Redis); None keeps that state in-process."""
    docs = {} if settings.docs_enabled else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="AI Core", version="0.1.0", description="Self-hosted model serving on Ray Serve.", **docs)
    app.state.settings = settings
    app.state.router = router
    metrics = app.state.metrics = MetricsRecorder(metrics_hub, settings.metrics_flush_s)
    app.state.store = store = make_store(settings.redis_url, on_error=lambda: metrics.count("store_errors"),
                                           password=settings.redis_password)
    app.state.sessions = SessionStore(store, settings.session_ttl_s)
    cache = None
    if settings.cache_enabled:
        cache_store = store if not settings.cache_redis_url else make_store(
            settings.cache_redis_url, on_error=lambda: metrics.count("store_errors"), password=settings.redis_password)
        cache = ResponseCache(cache_store, settings.cache_ttl_s, on_write=lambda n: metrics.count("cache_bytes", n))
    app.state.generation = GenerationService(router, settings, cache, app.state.sessions)
    quota_clock = QuotaClock(settings.quota_timezone)
    # Usage buckets in Redis are summed in memory and written once per USAGE_FLUSH_S (0: at each request).
    buffer = UsageBuffer(store, settings.usage_flush_s) if store.kind == "redis" and settings.usage_flush_s else None
    app.state.keys = KeyService(store, router.entries, settings.web_token_keep_s, quota_clock, buffer)
    if buffer is not None:
        app.router.on_shutdown.append(buffer.flush)  # the replica stops: its last sums are written
    # Next to the keys it speaks of: in Redis, or (without REDIS_URL) in this replica's memory.
    app.state.audit = AuditLog.for_store(store, retention_days=settings.audit_retention_days,
                                         max_entries=settings.audit_max_entries,
                                         mint_max_entries=settings.audit_mint_max_entries,
                                         mint_retention_s=settings.audit_mint_retention_s,
                                         refused_max_entries=settings.audit_refused_max_entries)
    app.state.limiter = RateLimiter(store, settings.rate_limit_per_minute, settings.tokens_per_minute, quota_clock)
    app.state.auth = Authenticator(
        settings.api_keys, settings.api_key_header, app.state.keys, store, settings.store_failure_mode,
    )
    app.state.pipeline = Pipeline(app.state.auth, app.state.limiter, app.state.keys, settings.max_in_flight_per_key,
                                  on_quota=lambda key_id, quota, share: metrics.record(QuotaEvent(key_id, quota, share)))
    app.state.batch = BatchService(app.state.generation, settings, app.state.pipeline)
    # Jobs and Telegram chats are reached through any ingress replica: without Redis they live in the shared hub.
    shared = RemoteStore(chat_hub) if chat_hub is not None and not settings.redis_url else store
    app.state.batch_jobs = BatchJobService(app.state.batch, shared, settings)
    app.router.on_shutdown.append(app.state.batch_jobs.shutdown)  # the replica stops: jobs end interrupted
    app.state.embeddings = EmbeddingService(router, settings)
    app.state.model_status = model_status
    app.state.control = ModelControl(router, model_status, settings, footprints or {})
    app.state.generation.gate = app.state.embeddings.gate = app.state.control.before_request
    app.state.generation.cache_gate = app.state.control.refuse_disabled
    chats = ChatHistory(shared, settings.telegram_history_messages, settings.telegram_history_ttl_s)
    access = TelegramAccess(settings, app.state.pipeline, shared)
    app.state.telegram = TelegramBot(settings, app.state.generation, access, chats)
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    install_openapi(app)
    routers = (api_v1.router, openai.router, keys.router, keys.usage_router, audit.router, integrations.router,
               web.router)
    for included in routers:
        app.include_router(included)
    app.state.routes_in_order = routes_in_order(routers)  # which are admin routes (serve_app/http/refusals.py)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.add_middleware(GuardMiddleware, settings=settings)
    origins, methods, headers = settings.cors_origins, settings.cors_methods, settings.cors_headers
    if origins:  # inside the request-context middleware: preflights are logged with an id too
        app.add_middleware(
            ConfiguredCORS, allow_origins=origins, allow_methods=methods, allow_headers=headers,
            expose_headers=["X-Request-ID"], max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, record=app.state.metrics.record)
    return app
