"""The audit log and the `admin_read` scope over HTTP in-process (no Ray; the memory store). The real
server with Redis is tested in tests/integration/security/test_audit.py."""

from tests.unit.serve_app.test_auth_asgi import BOOT, _app, _run

ADMIN = {"X-API-Key": BOOT}


async def _audit(c, headers=ADMIN, **params) -> dict:
    r = await c.get("/api/v1/audit", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_key_changes_are_recorded_with_who_where_and_before_after():
    async def scenario(c):
        made = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "bot", "rate_limit_per_minute": 5})).json()
        await c.patch(f"/api/v1/keys/{made['id']}", headers=ADMIN, json={"rate_limit_per_minute": 9})
        await c.patch(f"/api/v1/keys/{made['id']}", headers=ADMIN, json={"enabled": False})
        rotated = (await c.post(f"/api/v1/keys/{made['id']}/rotate", headers=ADMIN)).json()
        await c.delete(f"/api/v1/keys/{made['id']}", headers=ADMIN)
        missing = await c.delete("/api/v1/keys/key-0000000000000000", headers=ADMIN)
        assert missing.status_code == 404
        page = await _audit(c, target=made["id"])
        assert [e["action"] for e in page["data"]] == ["key.revoke", "key.rotate", "key.disable", "key.update",
                                                       "key.create"]
        revoke, rotate, disable, update, create = page["data"]
        assert all(e["actor_id"].startswith("boot-") and e["actor_name"] == "API_KEYS" for e in page["data"])
        assert all(e["client_ip"] == "127.0.0.1" and e["outcome"] == "ok" for e in page["data"])
        assert create["status"] == 201 and create["changes"]["name"] == {"before": None, "after": "bot"}
        assert update["changes"] == {"rate_limit_per_minute": {"before": 5, "after": 9}}
        assert disable["changes"] == {"enabled": {"before": True, "after": False}}
        assert rotate["changes"]["key_prefix"] == {"before": made["key_prefix"], "after": rotated["key_prefix"]}
        assert set(revoke["changes"]) == {"revoked_at"}
        text = str(page)
        assert made["key"] not in text and rotated["key"] not in text and "hash" not in text
        failed = (await _audit(c, target="key-0000000000000000"))["data"]
        assert [(e["action"], e["outcome"], e["status"]) for e in failed] == [("key.revoke", "failed", 404)]
    _run(_app(), scenario)


def test_refused_admin_attempts_are_recorded_and_admin_read_changes_nothing():
    async def scenario(c):
        bot = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "bot"})).json()
        viewer = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "watcher",
                                                                    "scopes": ["admin_read"]})).json()
        bot_h, viewer_h = {"X-API-Key": bot["key"]}, {"X-API-Key": viewer["key"]}
        assert (await c.post("/api/v1/keys", headers=bot_h, json={"name": "x"})).status_code == 403
        assert (await c.get("/api/v1/keys", headers={"X-API-Key": "aic-not-a-key"})).status_code == 401
        listed = await c.get("/api/v1/keys", headers=viewer_h)
        assert listed.status_code == 200 and {k["id"] for k in listed.json()["data"]} >= {bot["id"], viewer["id"]}
        assert (await c.get(f"/api/v1/keys/{bot['id']}/usage", headers=viewer_h)).status_code == 200
        for method, path, body in (("POST", "/api/v1/keys", {"name": "y"}), ("DELETE", f"/api/v1/keys/{bot['id']}", None),
                                   ("PATCH", f"/api/v1/keys/{bot['id']}", {"enabled": False}),
                                   ("POST", "/api/v1/models/unload", {"model": "x"})):
            refused = await c.request(method, path, headers=viewer_h, json=body)
            assert refused.status_code == 403 and "'admin'" in refused.json()["error"]["message"], refused.text
        refusals = (await _audit(c, headers=viewer_h, action="admin.refused"))["data"]
        assert [(e["actor_id"], e["route"], e["status"]) for e in refusals] == [
            (viewer["id"], "POST /api/v1/models/unload", 403), (viewer["id"], f"PATCH /api/v1/keys/{bot['id']}", 403),
            (viewer["id"], f"DELETE /api/v1/keys/{bot['id']}", 403), (viewer["id"], "POST /api/v1/keys", 403),
            ("anonymous", "GET /api/v1/keys", 401), (bot["id"], "POST /api/v1/keys", 403)]
        assert refusals[-1]["actor_name"] == "bot" and refusals[-1]["reason"] == "insufficient_scope"
        assert "aic-not-a-key" not in str(refusals)
        assert (await c.get("/api/v1/audit", headers=bot_h)).status_code == 403
    _run(_app(), scenario)


def test_audit_paging_and_bad_filters():
    async def scenario(c):
        for n in range(5):
            await c.post("/api/v1/keys", headers=ADMIN, json={"name": f"k{n}"})
        first = await _audit(c, limit=2, action="key.create")
        second = await _audit(c, limit=2, action="key.create", before=first["next_before"])
        third = await _audit(c, limit=2, action="key.create", before=second["next_before"])
        names = [e["changes"]["name"]["after"] for p in (first, second, third) for e in p["data"]]
        assert names == ["k4", "k3", "k2", "k1", "k0"] and third["next_before"] is None
        for bad in ({"limit": 0}, {"limit": 201}, {"before": "yesterday"}, {"since": -1}):
            r = await c.get("/api/v1/audit", headers=ADMIN, params=bad)
            assert r.status_code == 400 and r.json()["error"]["param"], (bad, r.text)
    _run(_app(), scenario)


def test_a_job_cancel_is_recorded_and_admin_read_may_not_cancel_another_keys_job():
    async def scenario(c):
        bot = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "mailer"})).json()
        viewer = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "watcher",
                                                                    "scopes": ["admin_read", "inference"]})).json()
        bot_h, viewer_h = {"X-API-Key": bot["key"]}, {"X-API-Key": viewer["key"]}
        job = await c.post("/api/v1/generate/batch/jobs", headers=bot_h,
                           json={"items": [{"prompt": "hi", "model": "no-such-model"}]})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert (await c.get(f"/api/v1/generate/batch/jobs/{job_id}", headers=viewer_h)).status_code == 200
        refused = await c.post(f"/api/v1/generate/batch/jobs/{job_id}/cancel", headers=viewer_h)
        assert refused.status_code == 403 and "'admin'" in refused.json()["error"]["message"]
        unknown = await c.post("/api/v1/generate/batch/jobs/bjob_000000000000000000000000/cancel", headers=bot_h)
        assert unknown.status_code == 404
        assert (await c.post(f"/api/v1/generate/batch/jobs/{job_id}/cancel", headers=bot_h)).status_code in (200, 202)
        entries = (await _audit(c, action="job.cancel"))["data"]
        assert [(e["actor_id"], e["target"], e["outcome"], e["status"]) for e in entries][1:] == [
            (viewer["id"], job_id, "failed", 403)]  # the job it could not see is not recorded
        assert entries[0]["actor_id"] == bot["id"] and entries[0]["actor_name"] == "mailer"
        assert entries[0]["target"] == job_id and entries[0]["outcome"] == "ok"
    _run(_app(), scenario)


def test_admin_requests_refused_by_limits_body_or_the_allowlist_are_recorded_once_each():
    async def scenario(c):
        operator = (await c.post("/api/v1/keys", headers=ADMIN, json={"name": "operator", "scopes": ["admin"],
                                                                      "rate_limit_per_minute": 1})).json()
        op_h = {"X-API-Key": operator["key"]}
        bad = await c.post("/api/v1/keys", headers=op_h, json={"name": "x", "rate_limit_per_minute": -1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rate_limit_per_minute", bad.text
        malformed = await c.post("/api/v1/keys", headers={**ADMIN, "content-type": "application/json"},
                                 content=b"{not json")
        assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
        assert (await c.get("/api/v1/keys", headers=op_h)).status_code == 429  # its second request this minute (the bad body counted)
        assert (await c.get("/v1/models", headers={"X-API-Key": "aic-not-a-key"})).status_code == 401  # not admin
        refusals = (await _audit(c, action="admin.refused"))["data"]
        assert [(e["actor_id"], e["actor_name"], e["route"], e["status"], e["reason"]) for e in refusals] == [
            (operator["id"], "operator", "GET /api/v1/keys", 429, "rate_limit_exceeded"),
            (refusals[1]["actor_id"], "API_KEYS", "POST /api/v1/keys", 400, "invalid_json"),
            (operator["id"], "operator", "POST /api/v1/keys", 400, "invalid_value")]
        assert refusals[1]["actor_id"].startswith("boot-")
    _run(_app(), scenario)


def test_an_admin_request_from_an_address_outside_the_allowlist_is_recorded():
    async def scenario(c):
        assert (await c.get("/api/v1/audit", headers=ADMIN)).status_code == 403
        assert (await c.get("/v1/models", headers=ADMIN)).status_code == 403  # not an admin route: not recorded
        assert (await c.get("/api/v1/keys/key-0000000000000000/usage", headers=ADMIN)).status_code == 403
    app = _app(ip_allowlist=["10.0.0.0/8"])
    _run(app, scenario, client_ip="192.0.2.7")

    async def read(c):
        refusals = (await _audit(c, action="admin.refused"))["data"]
        assert [(e["actor_name"], e["client_ip"], e["route"], e["status"], e["reason"]) for e in refusals] == [
            ("API_KEYS", "192.0.2.7", "GET /api/v1/keys/key-0000000000000000/usage", 403, "ip_not_allowed"),
            ("API_KEYS", "192.0.2.7", "GET /api/v1/audit", 403, "ip_not_allowed")]
    _run(app, read, client_ip="10.1.2.3")
