"""The audit log on the real server (two ingress replicas, Redis): every admin action with who, from
where and before/after, never a secret; refused admin attempts; the read-only `admin_read` scope."""

from __future__ import annotations

import httpx

from tests.integration.security.conftest import ADMIN_KEY, MODEL

FORWARDED = "10.9.8.7"  # the client behind the trusted proxy (127.0.0.1): the address the server resolves


def _audit(client: httpx.Client, **params) -> list[dict]:
    r = client.get("/api/v1/audit", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"
    return r.json()["data"]


def test_every_key_change_and_mint_is_recorded_without_a_secret(url):
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": ADMIN_KEY, "X-Forwarded-For": FORWARDED}) as c:
        made = c.post("/api/v1/keys", json={"name": "audited-bot", "rate_limit_per_minute": 30})
        assert made.status_code == 201, made.text
        key_id, secrets = made.json()["id"], [made.json()["key"]]
        assert c.patch(f"/api/v1/keys/{key_id}", json={"rate_limit_per_minute": 45}).status_code == 200
        assert c.patch(f"/api/v1/keys/{key_id}", json={"enabled": False}).status_code == 200
        rotated = c.post(f"/api/v1/keys/{key_id}/rotate")
        assert rotated.status_code == 200, rotated.text
        secrets.append(rotated.json()["key"])
        assert c.delete(f"/api/v1/keys/{key_id}").status_code == 200
        token = c.post("/api/v1/keys/web-tokens", json={"models": [MODEL], "expires_in_s": 60})
        assert token.status_code == 201, token.text
        secrets.append(token.json()["key"])
        assert c.post("/api/v1/models/load", json={"model": MODEL}).status_code == 200

        entries = _audit(c, target=key_id)
        assert [e["action"] for e in entries] == ["key.revoke", "key.rotate", "key.disable", "key.update", "key.create"]
        boot = entries[0]["actor_id"]
        assert boot.startswith("boot-")
        for entry in entries:
            assert (entry["actor_id"], entry["actor_name"], entry["client_ip"], entry["outcome"]) == (
                boot, "API_KEYS", FORWARDED, "ok"), entry
        revoke, rotate, disable, update, create = entries
        assert create["status"] == 201 and create["changes"]["rate_limit_per_minute"] == {"before": None, "after": 30}
        assert update["changes"] == {"rate_limit_per_minute": {"before": 30, "after": 45}}
        assert disable["changes"] == {"enabled": {"before": True, "after": False}}
        assert rotate["changes"] == {"key_prefix": {"before": made.json()["key_prefix"],
                                                   "after": rotated.json()["key_prefix"]}}
        assert revoke["changes"]["revoked_at"]["before"] is None and revoke["changes"]["revoked_at"]["after"] > 0
        minted = _audit(c, action="web_token.mint", target=token.json()["id"])
        assert len(minted) == 1 and minted[0]["changes"]["models"] == {"before": None, "after": [MODEL]}
        loads = _audit(c, action="model.load", target=MODEL, actor_id=boot)
        assert loads and loads[0]["changes"] == {} and loads[0]["status"] == 200  # loaded already: nothing changed
        everything = c.get("/api/v1/audit", params={"limit": 200}).text
        for secret in secrets:
            assert secret not in everything


def test_refused_admin_attempts_are_recorded(url, make_key):
    bot = make_key(name="inference-only", scopes=["inference"])
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": bot["key"]}) as c:
        refused = c.post("/api/v1/keys", json={"name": "escalate", "scopes": ["admin"]})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
        assert c.get("/api/v1/audit").status_code == 403
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": "aic-made-up-key-1234567890"}) as c:
        assert c.delete(f"/api/v1/keys/{bot['id']}").status_code == 401
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": ADMIN_KEY}) as admin:
        entries = _audit(admin, action="admin.refused", actor_id=bot["id"])
        assert [(e["route"], e["status"], e["reason"], e["outcome"], e["actor_name"], e["client_ip"])
                for e in entries] == [("GET /api/v1/audit", 403, "insufficient_scope", "refused", "inference-only",
                                       "127.0.0.1"),
                                      ("POST /api/v1/keys", 403, "insufficient_scope", "refused", "inference-only",
                                       "127.0.0.1")]
        anonymous = _audit(admin, action="admin.refused", actor_id="anonymous")
        assert any(e["route"] == f"DELETE /api/v1/keys/{bot['id']}" and e["status"] == 401 for e in anonymous)
        assert "aic-made-up-key" not in admin.get("/api/v1/audit", params={"limit": 200}).text


def test_admin_read_sees_keys_and_the_audit_and_changes_nothing(url, make_key):
    target = make_key(name="watched")
    viewer = make_key(name="watcher", scopes=["admin_read"])
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": viewer["key"]}) as c:
        listed = c.get("/api/v1/keys", params={"search": target["id"]})  # the list is paged: find it
        assert listed.status_code == 200 and target["id"] in [k["id"] for k in listed.json()["data"]]
        assert c.get(f"/api/v1/keys/{target['id']}/usage").status_code == 200
        assert c.get("/api/v1/generate/batch/jobs").status_code == 200
        assert _audit(c, target=target["id"])[0]["action"] == "key.create"
        for method, path, body in (("POST", "/api/v1/keys", {"name": "nope"}),
                                   ("DELETE", f"/api/v1/keys/{target['id']}", None)):
            r = c.request(method, path, json=body)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "insufficient_scope" and "'admin'" in r.json()["error"]["message"]
        refusals = _audit(c, action="admin.refused", actor_id=viewer["id"])
        assert [e["route"] for e in refusals] == [f"DELETE /api/v1/keys/{target['id']}", "POST /api/v1/keys"]
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": ADMIN_KEY}) as admin:
        assert admin.get(f"/api/v1/keys/{target['id']}").json()["revoked_at"] is None


def test_admin_requests_refused_by_limits_the_allowlist_or_their_body_are_recorded_once_each(url, make_key):
    operator = make_key(name="limited-operator", scopes=["admin"], rate_limit_per_minute=3)
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": operator["key"]}) as c:
        bad = c.post("/api/v1/keys", json={"name": ""})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "name", bad.text
        malformed = c.post("/api/v1/keys", content=b'{"name": ', headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json", malformed.text
        assert c.post("/api/v1/models/load", json={}).status_code == 400
        assert c.get("/api/v1/keys", params={"limit": 1}).status_code == 200  # its third request this minute
        limited = c.get("/api/v1/keys", params={"limit": 1})
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    outside = "192.0.2.44"  # behind the trusted proxy, outside IP_ALLOWLIST
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": ADMIN_KEY, "X-Forwarded-For": outside}) as c:
        for path in ("/api/v1/audit", "/v1/models"):  # the second is no admin route: not recorded
            r = c.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed", r.text
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": ADMIN_KEY}) as admin:
        mine = _audit(admin, action="admin.refused", actor_id=operator["id"])
        assert [(e["route"], e["status"], e["reason"], e["actor_name"], e["client_ip"]) for e in mine] == [
            ("GET /api/v1/keys", 429, "rate_limit_exceeded", "limited-operator", "127.0.0.1"),
            ("POST /api/v1/models/load", 400, "invalid_value", "limited-operator", "127.0.0.1"),
            ("POST /api/v1/keys", 400, "invalid_json", "limited-operator", "127.0.0.1"),
            ("POST /api/v1/keys", 400, "invalid_value", "limited-operator", "127.0.0.1")]
        from_outside = [e for e in _audit(admin, action="admin.refused") if e["client_ip"] == outside]
        assert [(e["route"], e["status"], e["reason"], e["actor_name"]) for e in from_outside] == [
            ("GET /api/v1/audit", 403, "ip_not_allowed", "API_KEYS")], from_outside
        assert from_outside[0]["actor_id"].startswith("boot-")
