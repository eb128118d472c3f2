"""The audit log on both stores: entries as recorded, newest first, filters, paging across its two
streams, retention and length caps. The Redis one runs against a real server (scripts/test.sh)."""

import asyncio
import os
import time

import pytest

from serve_app.state import audit_log
from serve_app.state.audit_log import (
    ACTIONS_STREAM,
    MINTS_STREAM,
    REFUSED,
    STREAMS,
    Actor,
    AuditLog,
    MemoryStreams,
    Query,
    field_changes,
    parse_id,
)
from serve_app.state.store import MemoryStore, RedisStore

REDIS_URL = os.environ.get("AICORE_TEST_REDIS_URL")
ADMIN, VIEWER = Actor("key-admin", "ops admin"), Actor("key-viewer", "watcher")


def _stores():
    yield pytest.param(MemoryStore, id="memory")
    yield pytest.param(
        lambda: RedisStore(REDIS_URL), id="redis",
        marks=pytest.mark.skipif(not REDIS_URL, reason="scripts/test.sh starts Redis and sets AICORE_TEST_REDIS_URL"),
    )


@pytest.fixture(params=list(_stores()))
def make_log(request):
    store = request.param()

    def make(**settings) -> AuditLog:
        return AuditLog.for_store(store, **settings)

    if store.kind == "redis":  # a fresh log (its connections are made in the test's own event loop)
        import redis

        redis.Redis.from_url(REDIS_URL).delete(*STREAMS)
    return make


def run(coro):
    return asyncio.run(coro)


def test_an_entry_holds_who_where_what_and_the_changes(make_log):
    async def scenario():
        log = make_log()
        entry_id = await log.record(ADMIN, "10.0.0.7", "key.update", "key-1", status=200,
                                    changes=field_changes({"rate_limit_per_minute": 60, "name": "a"},
                                                          {"rate_limit_per_minute": 120, "name": "a"}))
        entries, next_before = await log.page(Query())
        assert next_before is None
        assert entries == [{
            "id": entry_id, "time": parse_id(entry_id)[0] / 1000, "actor_id": "key-admin", "actor_name": "ops admin",
            "client_ip": "10.0.0.7", "action": "key.update", "target": "key-1", "outcome": "ok", "status": 200,
            "changes": {"rate_limit_per_minute": {"before": 60, "after": 120}},
        }]
    run(scenario())


def test_pages_newest_first_across_both_streams_without_gaps(make_log):
    async def scenario():
        log = make_log()
        recorded = []
        for n in range(7):
            recorded.append(await log.record(ADMIN, "10.0.0.1", "key.create", f"key-{n}", status=201))
            recorded.append(await log.record(ADMIN, "10.0.0.1", "web_token.mint", f"key-t{n}", status=201))
            recorded.append(await log.record(Actor("key-x"), "10.0.0.9", REFUSED, None, outcome="refused",
                                             status=403, route="POST /api/v1/keys"))
        assert len(set(recorded)) == 21  # one id per entry, all three streams
        seen, before = [], None
        while True:
            entries, before = await log.page(Query(limit=3, before=before))
            seen += [e["id"] for e in entries]
            if before is None:
                break
        assert seen == sorted(recorded, key=parse_id, reverse=True)
    run(scenario())


def test_filters_select_actor_action_target_and_time(make_log):
    async def scenario():
        log = make_log()
        await log.record(ADMIN, "10.0.0.1", "key.create", "key-a", status=201)
        await log.record(VIEWER, "10.0.0.2", REFUSED, None, outcome="refused", status=403, route="POST /api/v1/keys")
        await log.record(ADMIN, "10.0.0.1", "key.revoke", "key-a")
        await log.record(ADMIN, "10.0.0.1", "model.load", "m1")
        by_actor, _ = await log.page(Query(actor_id="key-viewer"))
        assert [(e["action"], e["route"]) for e in by_actor] == [(REFUSED, "POST /api/v1/keys")]
        assert [e["action"] for e in (await log.page(Query(target="key-a")))[0]] == ["key.revoke", "key.create"]
        assert [e["target"] for e in (await log.page(Query(action="model.load")))[0]] == ["m1"]
        everything, _ = await log.page(Query())
        newest, oldest = everything[0]["time"], everything[-1]["time"]
        assert len((await log.page(Query(since=newest)))[0]) >= 1
        assert all(e["time"] >= newest for e in (await log.page(Query(since=newest)))[0])
        assert all(e["time"] <= oldest for e in (await log.page(Query(until=oldest)))[0])
        assert (await log.page(Query(until=oldest - 1)))[0] == []
    run(scenario())


def test_retention_and_length_caps_trim_each_stream_on_its_own(make_log):
    async def scenario():
        capped = make_log(max_entries=3, mint_max_entries=1, refused_max_entries=2)
        actions = [await capped.record(ADMIN, None, "key.create", f"key-{n}") for n in range(5)]
        for n in range(6):  # floods of refusals and mints evict older entries of their own kind only
            await capped.record(Actor(f"anon-{n}"), None, REFUSED, None, outcome="refused", status=401)
            await capped.record(ADMIN, None, "web_token.mint", f"key-t{n}", status=201)
        kept, _ = await capped.page(Query(limit=200))
        assert [e["id"] for e in kept if e["action"] == "key.create"] == actions[:-4:-1]
        assert [e["actor_id"] for e in kept if e["action"] == REFUSED] == ["anon-5", "anon-4"]
        assert [e["target"] for e in kept if e["action"] == "web_token.mint"] == ["key-t5"]
        await asyncio.sleep(0.01)  # the next entry is at least 1 ms newer than every entry above
        short = make_log(retention_days=0.005 / 86400)  # keeps 5 ms
        newest = await short.record(ADMIN, None, "config.reload", "models.json")
        remaining, _ = await short.page(Query(action="config.reload"))
        assert [e["id"] for e in remaining] == [newest]
        assert [e["id"] for e in (await short.page(Query(limit=200)))[0] if e["action"] == "key.create"] == []
    run(scenario())


def test_mints_have_their_own_retention_and_the_mint_stream_expires_after_its_newest(make_log):
    async def scenario():
        log = make_log(mint_retention_s=0.005)  # mints kept 5 ms; admin actions the default 90 days
        action = await log.record(ADMIN, None, "key.create", "key-1")
        await log.record(ADMIN, None, "web_token.mint", "key-t1", status=201)
        await asyncio.sleep(0.01)
        newest = await log.record(ADMIN, None, "web_token.mint", "key-t2", status=201)
        kept, _ = await log.page(Query(limit=200))
        assert [e["id"] for e in kept] == [newest, action]  # the older mint went, the action stayed
        if log.streams.__class__.__name__ == "RedisStreams":  # the burst leaves nothing once it is old
            import redis

            direct = redis.Redis.from_url(REDIS_URL)
            assert direct.pttl(ACTIONS_STREAM) == -1 and direct.pttl(MINTS_STREAM) <= 5
            await asyncio.sleep(0.02)
            assert not direct.exists(MINTS_STREAM) and direct.exists(ACTIONS_STREAM)
    run(scenario())


def test_a_store_that_fails_loses_no_request(caplog):
    class Broken:
        async def append(self, *args):
            raise ConnectionError("down")

    log = AuditLog(Broken())
    assert run(log.record(ADMIN, "10.0.0.1", "key.revoke", "key-a")) is None
    assert "key.revoke" in caplog.text and "ConnectionError" in caplog.text


def test_field_changes_lists_only_what_changed():
    assert field_changes({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": None}) == {"b": {"before": 2, "after": 3}}
    assert field_changes(None, {"name": "x"}) == {"name": {"before": None, "after": "x"}}
    assert ACTIONS_STREAM == "aicore:audit"


def test_an_entry_the_store_refused_is_written_when_it_is_back(monkeypatch):
    monkeypatch.setattr(audit_log, "RETRY_S", 0.01)

    class Flaky(MemoryStreams):
        down = True

        async def append(self, *args):
            if self.down:
                raise ConnectionError("down")
            return await super().append(*args)

    async def scenario():
        streams = Flaky()
        log = AuditLog(streams)
        assert await log.record(ADMIN, "10.0.0.1", REFUSED, None, outcome="refused", status=503,
                                route="GET /api/v1/keys", reason="store_unavailable") is None
        at = time.time()
        await asyncio.sleep(0.05)
        assert (await log.page(Query()))[0] == []  # still down: kept
        streams.down = False
        while log.pending:
            await asyncio.sleep(0.01)
        [entry], _ = await log.page(Query())
        assert (entry["reason"], entry["status"]) == ("store_unavailable", 503)
        assert at - 1 < entry["time"] <= at  # when it happened, not when it was written
    run(scenario())
