"""AI Core's own CPU per cache hit: the ingress app alone, in this process, without Ray.

The real FastAPI app (`create_app`: every middleware, auth, limits, usage, cache, metrics, access
log) with the shipped models.json; the model handle is a stand-in that answers the one miss that
fills the cache, and the lifecycle gate is a no-op (its state is read off the request path).
ASGI calls go straight to the app (no HTTP client, no server), sequentially, so the figure is
the app's own CPU per request. The access log goes to /dev/null, written as in a replica.

    .venv/bin/python -m scripts.bench_hit_inprocess [--requests 5000] [--managed] [--redis] [--profile N]

`--managed`: a managed key (store lookup, rate limits, usage record) instead of a bootstrap key.
`--redis`: the store is a private redis-server (Debian's) instead of this process's memory.
`--profile N`: cProfile's N most expensive functions (cumulative) instead of the timing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import time
from pathlib import Path
from typing import Optional

from core.logs import configure_logging
from core.settings import Settings
from core.types import GenerationChunk, Usage
from deployments.config import load_models_file
from scripts.bench_cache import BODY, KEY, PATH
from serve_app.app import create_app
from serve_app.model_router import ModelEntry, ModelRouter

ROOT = Path(__file__).resolve().parent.parent


class _Status:
    app_name, present, reasons = None, {}, {}

    async def states(self, fresh=False, stale_ok=False):
        return {}


class _Stream:
    def __init__(self):
        self._chunks = [GenerationChunk(text="Jupiter."), GenerationChunk(finish_reason="stop", usage=Usage(12, 3))]

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    def cancel(self):
        pass


class _Handle:
    """Only what the one miss calls: handle.options(stream=True).stream.remote(request)."""

    def options(self, **_):
        return self

    @property
    def stream(self):
        return self

    def remote(self, _request):
        return _Stream()


async def _noop_gate(_entry) -> None:
    pass


def build(redis_url: Optional[str] = None):
    configure_logging("INFO", "text")
    for handler in logging.getLogger("aicore").handlers:
        handler.setStream(open("/dev/null", "w"))
    models = load_models_file(ROOT / "models.json").models
    router = ModelRouter({n: ModelEntry(n, c, _Handle(), "rev") for n, c in models.items()}, next(iter(models)))
    app = create_app(Settings(api_keys=KEY, redis_url=redis_url), router, None, _Status())
    app.state.generation.gate = app.state.generation.cache_gate = _noop_gate
    return app


async def _call(app, key: str) -> tuple[int, dict]:
    body = json.dumps(BODY).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()), (b"x-api-key", key.encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict = {}

    async def receive():
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = dict(message["headers"])

    await app(scope, receive, send)
    return answer["status"], answer["headers"]


async def run(args) -> None:
    app = build(args.redis_url)
    key = KEY
    if args.managed:
        from serve_app.protocol.keys import KeyCreate

        spec = KeyCreate(name="bench", rate_limit_per_minute=10**9, tokens_per_minute=10**12)
        key = (await app.state.keys.create(spec)).key
    for _ in range(2):  # the miss that fills the cache, then a hit
        status, headers = await _call(app, key)
        assert status == 200, status
    assert headers.get(b"x-cache") == b"HIT", headers
    for _ in range(200):  # warm-up
        await _call(app, key)
    profiler = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(args.requests):
        await _call(app, key)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        return
    spent = time.process_time() - started
    store = "Redis" if args.redis_url else "in-process store"
    print(f"{args.requests} cache hits ({'managed' if args.managed else 'bootstrap'} key, {store}): "
          f"{1e6 * spent / args.requests:.0f} us of CPU each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--managed", action="store_true")
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--profile", type=int, default=0)
    args = parser.parse_args()
    redis = None
    if args.redis:
        from tests.integration.redis_process import RedisProcess

        redis = RedisProcess().start()
    args.redis_url = redis.url if redis else None
    try:
        asyncio.run(run(args))
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    main()
