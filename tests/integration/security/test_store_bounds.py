"""Nothing in the shared store grows without bound: every Redis key a workload leaves either
expires or is one of the few kinds bounded by design (docs/security.md, "What Redis holds")."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import redis

from serve_app.state.audit_log import STREAMS
from tests.integration.security.conftest import MODEL

# Kept without expiry by design: each is one per key an admin made (or the set of those ids).
BOUNDED_BY_DESIGN = ("aicore:key:", "aicore:keyhash:", "aicore:usage:")
# The audit log's streams: trimmed by age and a length cap at every append (tests/unit/serve_app/state/test_audit_log.py).
AUDIT_STREAMS = STREAMS
# The ids of admin-made keys, their order and its marker: bounded by what admins make.
ADMIN_KEY_INDEXES = ("aicore:keys", "aicore:keys:order", "aicore:keys:order:ready")


def _tokens(url: str, admin_key: str, n: int, expires_in_s: int, use: bool = False) -> list[dict]:
    """`n` web tokens minted (16 at a time), each used once right after its minting when `use`."""
    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore) -> dict:
        async with gate:
            made = await client.post("/api/v1/keys/web-tokens", headers={"X-API-Key": admin_key},
                                     json={"models": [MODEL], "expires_in_s": expires_in_s})
            assert made.status_code == 201, made.text
            token = made.json()
            if use:
                used = await client.get("/v1/models", headers={"Authorization": f"Bearer {token['key']}"})
                assert used.status_code == 200, used.text
            return token

    async def mint() -> list[dict]:
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(*(one(client, gate) for _ in range(n)))
    return asyncio.run(mint())


def _mentioning(client: redis.Redis, ids: set[str]) -> list[str]:
    """Every live key whose name or (set, sorted set) members name one of `ids`."""
    found = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        members: set[str] = set()
        if kind == "set":
            members = client.smembers(name)
        elif kind == "zset":  # an index by deadline: members past theirs are dropped at the next write
            members = set(client.zrangebyscore(name, time.time(), "+inf"))
        if any(i in name for i in ids) or members & ids:
            found.append(name)
    return found


def test_used_web_tokens_leave_nothing_behind_once_expired(expiring_web_tokens, redis_server, telegram_key):
    """The tokens were minted and used when this package's tests began (security/conftest.py), so
    their entries (the 60-second rate windows the longest) expire while the other tests run."""
    ids, existed = expiring_web_tokens
    assert existed, "the tokens' records exist while they live"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    # The store kept its data meanwhile (a restart would empty it and pass this test for nothing).
    assert _mentioning(client, {telegram_key["id"]}), "the store was emptied since the tokens were made"
    left: list[str] = []
    for _ in range(150):  # a bounded wait: the tokens expire after 5 s, their entries WEB_TOKEN_KEEP_S later
        left = _mentioning(client, ids)
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"{len(left)} entries outlived the tokens, e.g. {left[:5]}"


def test_every_key_a_workload_leaves_expires_or_is_bounded_by_design(url, redis_server, make_key):
    from tests.integration.security.conftest import ADMIN_KEY

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    key = make_key(scopes=["inference"], rate_limit_per_minute=100, tokens_per_minute=100000)
    token = _tokens(url, ADMIN_KEY, 1, expires_in_s=60)[0]
    for secret in (key["key"], token["key"]):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=120) as c:
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
            assert c.post("/v1/chat/completions", json=chat).status_code == 200  # rate windows, cache
            turn = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                    "session_id": "bounds-session", "max_tokens": 2}
            assert c.post("/api/v1/chat", json=turn).status_code == 200, "sessions and their index"
            job = c.post("/api/v1/generate/batch/jobs",
                         json={"items": [{"id": "a", "prompt": "Hi", "max_tokens": 2, "model": MODEL}]})
            assert job.status_code == 202, job.text
            # A running job writes a record and then its expiry (two commands): read the store once it ended.
            for _ in range(600):  # a bounded wait
                if c.get(f"/api/v1/generate/batch/jobs/{job.json()['id']}").json()["status"] in ("completed", "failed"):
                    break
                time.sleep(0.2)
    admin_ids = set(client.smembers("aicore:keys"))
    unbounded = []
    for name in client.scan_iter(count=1000):
        if client.pttl(name) > 0 or name in ADMIN_KEY_INDEXES or name in AUDIT_STREAMS:
            continue
        owner = None
        if name.startswith("aicore:keyhash:"):
            owner = client.get(name)
        elif name.startswith(BOUNDED_BY_DESIGN):
            owner = name.rsplit(":", 1)[1]
        if owner in admin_ids or (owner and owner.startswith("boot-")):
            record = client.get("aicore:key:" + owner)
            if record is None or not json.loads(record).get("web_token"):
                continue
        unbounded.append(name)
    assert not unbounded, f"kept for ever: {unbounded[:10]}"
    assert token["id"] not in admin_ids
