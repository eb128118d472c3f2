"""One `serve run` for the security tests: SmolLM2 and the int8 MiniLM embedder, two ingress
replicas, its own Redis, and the Telegram bot under a managed key made in that Redis first.

Package-scoped: it stops when this package's tests end, before the other integration tests run.

The Redis is private to this server (started and stopped here) so that one test can stop
it to check the store-down behaviour. Clients reach the server from 127.0.0.1 (a trusted
proxy here) or, by binding their source address, from 127.0.0.2 (not trusted).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import httpx
import pytest

from scripts.serve_process import ROOT, ServeProcess
from serve_app.access.keys import KeyService
from serve_app.protocol.keys import KeyCreate
from serve_app.state.store import RedisStore
from tests.integration.redis_process import RedisProcess

ADMIN_KEY = "sec-admin-bootstrap-key"
MODEL = "smollm2-135m-instruct"
EMBEDDER = "minilm-l6-v2-int8"
TELEGRAM_SECRET = "sec-telegram-webhook-secret"
MAX_BODY_BYTES = 20000
MAX_MESSAGES = 8
MAX_PROMPT_LENGTH = 4000
PROMPT_TERM = "forbiddenword"
OUTPUT_TERM = "zebra"
GLOBAL_ALLOWLIST = "127.0.0.0/8,::1/128,10.0.0.0/8,2001:db8::/32"
WS_AUTH_TIMEOUT_S = 5
WS_UNAUTHENTICATED_PER_ADDRESS = 3  # per ingress replica (two here)
WEB_TOKEN_KEEP_S = 2
BODY_TIMEOUT_S = 5  # a body arriving slower answers 408 (test_slow_clients.py)
MAX_IN_FLIGHT_PER_KEY = 6  # per ingress replica (two here)


RedisServer = RedisProcess  # a private redis-server this package's tests may stop and start


@pytest.fixture(scope="package")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def _one_model_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {MODEL: {**data["models"][MODEL], "stream_interval_ms": 0},  # every token its own chunk
                      EMBEDDER: data["models"][EMBEDDER]}
    path = Path(tempfile.mkdtemp(prefix="aicore-sec-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="package")
def telegram_key(redis_server) -> dict:
    """The bot's managed key, made in the server's Redis before the server starts (as an
    operator does with `python -m serve_app.keys_cli`): {"id", "key"}."""
    async def make():
        created = await KeyService(RedisStore(redis_server.url), [MODEL, EMBEDDER]).create(
            KeyCreate(name="telegram-bot", scopes=["inference"]))
        return {"id": created.id, "key": created.key}
    return asyncio.run(make())


@pytest.fixture(scope="package")
def sec_server(redis_server, telegram_key):
    env = {
        "TELEGRAM_API_KEY": telegram_key["key"],
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "API_KEYS": ADMIN_KEY,
        "REDIS_URL": redis_server.url,
        "INGRESS_REPLICAS": "2",
        "LOG_FORMAT": "text",
        "LOG_PROMPTS": "1",
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "IP_ALLOWLIST": GLOBAL_ALLOWLIST,
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "MAX_MESSAGES": str(MAX_MESSAGES),
        "MAX_PROMPT_LENGTH": str(MAX_PROMPT_LENGTH),
        "CONTENT_FILTER_TERMS": PROMPT_TERM,
        "CONTENT_FILTER_PATTERNS": json.dumps([r"secret-\d{4}"]),
        "CONTENT_FILTER_OUTPUT_TERMS": OUTPUT_TERM,
        "METRICS_FLUSH_S": "0.5",
        # test_websocket_abuse.py: sockets before auth (defaults 10 s and 16)
        "WS_AUTH_TIMEOUT_S": str(WS_AUTH_TIMEOUT_S),
        "WS_UNAUTHENTICATED_PER_ADDRESS": str(WS_UNAUTHENTICATED_PER_ADDRESS),
        "WEB_TOKEN_KEEP_S": str(WEB_TOKEN_KEEP_S),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MAX_IN_FLIGHT_PER_KEY": str(MAX_IN_FLIGHT_PER_KEY),  # expired web tokens' entries go within the tests
    }
    process = ServeProcess(env=env, args={"model_config_path": str(_one_model_file())})
    process.start(ready_models=(MODEL, EMBEDDER))
    yield process
    process.stop()


@pytest.fixture(scope="package")
def url(sec_server):
    return sec_server.base_url


@pytest.fixture(scope="package", autouse=True)
def expiring_web_tokens(request, sec_server, redis_server) -> tuple[set, bool]:
    """200 web tokens living 5 s, each used once, made when this package's tests begin if
    test_store_bounds.py is among them: it checks that nothing of them is left, and their entries
    (a rate window lives 60 s) expire while the tests between run instead of while it waits.
    Their ids, and whether their records existed right after."""
    if not any(item.path.name == "test_store_bounds.py" for item in request.session.items):
        return set(), False
    import redis

    from tests.integration.security.test_store_bounds import _mentioning, _tokens

    ids = {t["id"] for t in _tokens(sec_server.base_url, ADMIN_KEY, 200, expires_in_s=5, use=True)}
    return ids, bool(_mentioning(redis.Redis.from_url(redis_server.url, decode_responses=True), ids))


@pytest.fixture
def admin(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=120) as client:
        yield client


@pytest.fixture
def make_key(admin):
    def make(**fields) -> dict:
        r = admin.post("/api/v1/keys", json={"name": "test", **fields})
        assert r.status_code == 201, r.text
        return r.json()
    return make


def from_address(url: str, source: str, **kwargs) -> httpx.Client:
    """A client whose connections leave from `source` (127.0.0.2 is a peer the server does not trust)."""
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=source), timeout=120, **kwargs)
