"""Redis commands one request costs on the hot path, read from a real Redis's INFO commandstats.

Runs N requests of a managed key through the real admission path (key lookup, RPM/TPM and
quotas, settle, usage record: `Pipeline.admit`, `Admission.limit`, `Admission.close`) against
REDIS_URL, once for a key with RPM/TPM only and once (where the code has quotas) for a key with
every quota, and prints per request: the commands the client sent (round trips' commands:
EVALSHA, HINCRBY, ...) and every command Redis ran (those inside the scripts too).

    redis-server --port 6390 --save '' &
    PYTHONPATH=. .venv/bin/python scripts/redis_commands_per_request.py --redis redis://127.0.0.1:6390/0 -n 200

Written against the admission API that older revisions share, so the same script measures a
checkout from before quotas (its "quotas" run is skipped there).
"""

from __future__ import annotations

import argparse
import asyncio
import json

from serve_app.access.auth import Authenticator
from serve_app.access.keys import KeyService
from serve_app.access.ratelimit import RateLimiter
from serve_app.pipeline import Pipeline, RequestContext
from serve_app.protocol.keys import KeyCreate
from serve_app.state.store import RedisStore

try:  # the usage buffer (USAGE_FLUSH_S); older revisions write every bucket at each request
    from serve_app.access.usage_buffer import UsageBuffer
except ImportError:
    UsageBuffer = None

MODEL = "bench-model"
_SCRIPTED = {"evalsha", "eval", "fcall"}


async def commandstats(store: RedisStore) -> dict[str, int]:
    stats = await store.client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def run(store: RedisStore, fields: dict, requests: int, flush_s: float) -> dict:
    buffer = UsageBuffer(store, flush_s) if UsageBuffer is not None and flush_s else None
    keys = KeyService(store, [MODEL], buffer=buffer) if buffer is not None else KeyService(store, [MODEL])
    pipeline = Pipeline(Authenticator([], "X-API-Key", keys, store, "closed"), RateLimiter(store, 0, 0), keys)
    created = await keys.create(KeyCreate(name="bench", **fields))
    before = await commandstats(store)
    for _ in range(requests):
        admission = await pipeline.admit(RequestContext("http", created.key, "127.0.0.1"), "inference")
        await admission.limit(MODEL, 40)
        admission.charge(12, 20)  # fewer than reserved: the settle gives some back (one more script)
        await admission.close(200)
    served = await commandstats(store)
    if buffer is not None:
        await buffer.flush()
    after = await commandstats(store)
    delta = _delta(before, after)
    per_request = {name: round(calls / requests, 2) for name, calls in sorted(delta.items())}
    scripted = sum(calls for name, calls in delta.items() if name in _SCRIPTED)
    total = sum(delta.values())
    return {"key": fields, "requests": requests, "usage_flush_s": flush_s if buffer is not None else None,
            "per_request": per_request, "scripts_per_request": round(scripted / requests, 2),
            "all_commands_per_request": round(total / requests, 2),
            "flush_commands": sum(_delta(served, after).values())}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {name: calls for name, calls in delta.items() if calls and name != "info"}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", "--requests", type=int, default=200)
    parser.add_argument("--usage-flush-s", type=float, default=1.0, help="0: every bucket at each request")
    args = parser.parse_args()
    store = RedisStore(args.redis)
    limits = {"rate_limit_per_minute": 100000, "tokens_per_minute": 10 ** 9}
    quotas = {"daily_token_quota": 10 ** 9, "monthly_token_quota": 10 ** 9, "daily_request_quota": 10 ** 6,
              "monthly_request_quota": 10 ** 6}
    runs = [limits]
    if "daily_token_quota" in KeyCreate.model_fields:
        runs.append({**limits, **quotas})
    for fields in runs:
        print(json.dumps(await run(store, fields, args.requests, args.usage_flush_s)))


if __name__ == "__main__":
    asyncio.run(main())
