"""Keys, sessions and batches through the real app in-process (tests/unit/in_process.py): the admin
API's keys as the gate sees them, a session's history as the replica receives it, a batch's items
answered and refused one by one. The same through `serve run` with Redis: tests/integration."""

from tests.unit.in_process import MODEL, FakeReplica, app_over, run

GEMMA = "gemma3-270m"


def _chat(text: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 4, **extra}


def test_a_created_key_reaches_only_its_models_and_stops_when_revoked():
    app = app_over(FakeReplica(), models=(MODEL, GEMMA))

    async def scenario(c):
        created = await c.post("/api/v1/keys", json={"name": "bot", "models": [MODEL]})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        own = {"X-API-Key": key}
        assert [m["id"] for m in (await c.get("/v1/models", headers=own)).json()["data"]] == [MODEL]
        other = await c.post("/v1/chat/completions", headers=own, json={"model": GEMMA, **_chat("x")})
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
        admin = await c.get("/api/v1/keys", headers=own)
        assert admin.status_code == 403 and admin.json()["error"]["code"] == "insufficient_scope"
        assert (await c.delete(f"/api/v1/keys/{key_id}")).json()["revoked_at"] is not None
        revoked = await c.get("/v1/models", headers=own)
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "key_revoked"
    run(app, scenario)


def test_a_keys_rate_limit_is_a_429_with_retry_after_that_spares_the_replica():
    replica = FakeReplica()

    async def scenario(c):
        key = (await c.post("/api/v1/keys", json={"name": "slow", "rate_limit_per_minute": 1})).json()["key"]
        first = await c.post("/api/v1/generate", headers={"X-API-Key": key}, json={"prompt": "a", "max_tokens": 4})
        second = await c.post("/api/v1/generate", headers={"X-API-Key": key}, json={"prompt": "b", "max_tokens": 4})
        return first, second
    first, second = run(app_over(replica), scenario)
    assert first.status_code == 200 and second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded" and int(second.headers["retry-after"]) > 0
    assert [r.prompt for r in replica.requests] == ["a"]


def test_a_session_sends_its_history_to_the_replica_until_deleted():
    replica = FakeReplica(pieces=("fine",))

    async def scenario(c):
        for text in ("hi", "again"):
            r = await c.post("/api/v1/chat", json=_chat(text, session_id="s1"))
            assert r.status_code == 200 and r.json()["session_id"] == "s1", r.text
        stored = (await c.get("/api/v1/sessions/s1")).json()["messages"]
        deleted = await c.delete("/api/v1/sessions/s1")
        gone = await c.get("/api/v1/sessions/s1")
        return stored, deleted, gone
    stored, deleted, gone = run(app_over(replica), scenario)
    assert [m["content"] for m in replica.requests[1].messages] == ["hi", "fine", "again"]
    assert [m["content"] for m in stored] == ["hi", "fine", "again", "fine"]
    assert deleted.status_code == 200
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "session_not_found"


def test_a_batch_answers_each_item_and_refuses_a_bad_one_by_itself():
    replica = FakeReplica()
    items = [{"id": "a", "type": "generate", "prompt": "x", "max_tokens": 2},
             {"id": "b", "type": "generate", "prompt": "", "max_tokens": 2},
             {"id": "c", "type": "chat", **_chat("y")}]

    async def scenario(c):
        return await c.post("/api/v1/generate/batch", json={"items": items})
    answer = run(app_over(replica, cache_enabled=False), scenario)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["id"], r["status"]) for r in results] == [("a", "ok"), ("b", "error"), ("c", "ok")]
    assert results[0]["result"]["response"] == "Hello there"
    assert results[1]["error"]["param"] == "prompt" and results[1]["error"]["type"] == "invalid_request_error"
    assert answer.json()["totals"] == {**answer.json()["totals"], "items": 3, "succeeded": 2, "failed": 1}
    assert len(replica.requests) == 2  # the refused item never reached the replica
