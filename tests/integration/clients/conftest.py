"""One `serve run` for the clients that run under managed keys: the Telegram bot and web tokens.

Two chat models (SmolLM2, Gemma 3), two ingress replicas, its own Redis. The bot's key is a
managed key written into that Redis before the server starts, as an operator creates it
(docs/integrations.md#telegram). Package-scoped: stopped when this package's tests end.
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
from serve_app.protocol.keys import KeyCreate, KeyCreated
from serve_app.state.store import RedisStore
from tests.integration.conftest import DEFAULT, GEMMA, TELEGRAM_BOT, TELEGRAM_SECRET
from tests.integration.redis_process import RedisProcess

ADMIN_KEY = "clients-admin-bootstrap-key"
CHAT_RPM = 4
PRIVATE_ID, GROUP_ID, CHANNEL_ID = 111222333, -1001234567890, -1009876543210
ALLOWED_CHATS = (PRIVATE_ID, GROUP_ID, CHANNEL_ID, 555000111, 555000222, 555000333, 555000444, 555000555)
STRANGER_ID = 999000111  # not on TELEGRAM_ALLOWED_CHATS


@pytest.fixture(scope="package")
def redis_server():
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def bot_key(redis_server) -> KeyCreated:
    """The bot's managed key: inference only, both chat models, no limits of its own yet (tests set some)."""
    async def create() -> KeyCreated:
        spec = KeyCreate(name="telegram-bot", scopes=["inference"], models=[DEFAULT, GEMMA])
        return await KeyService(RedisStore(redis_server.url), [DEFAULT, GEMMA]).create(spec)
    return asyncio.run(create())


def _two_model_file() -> Path:
    data = json.loads((ROOT / "models.json").read_text())
    data["models"] = {name: data["models"][name] for name in (DEFAULT, GEMMA)}
    path = Path(tempfile.mkdtemp(prefix="aicore-clients-")) / "models.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="package")
def clients_server(redis_server, bot_key):
    env = {
        "API_KEYS": ADMIN_KEY,
        "REDIS_URL": redis_server.url,
        "INGRESS_REPLICAS": "2",
        "LOG_FORMAT": "json",
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "TELEGRAM_API_KEY": bot_key.key,
        "TELEGRAM_BOT_USERNAME": TELEGRAM_BOT,
        "TELEGRAM_MAX_TOKENS": "16",
        "TELEGRAM_CHAT_RPM": str(CHAT_RPM),
        "TELEGRAM_ALLOWED_CHATS": ",".join(str(c) for c in ALLOWED_CHATS),
    }
    process = ServeProcess(env=env, args={"model_config_path": str(_two_model_file())})
    process.start(ready_models=(DEFAULT, GEMMA))
    yield process
    process.stop()


@pytest.fixture(scope="package")
def url(clients_server):
    return clients_server.base_url


@pytest.fixture
def admin(url):
    with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=120) as client:
        yield client
