"""Batch jobs with stored keys and Redis: a job is its key's (and admins'); the key's checks apply;
submissions are charged and bounded per key; a key's state is looked up again for every item."""

from __future__ import annotations

import time

import httpx

from tests.integration.security.conftest import ADMIN_KEY, MODEL

JOBS = "/api/v1/generate/batch/jobs"


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _final(client: httpx.Client, job_id: str, polls: int = 600) -> dict:
    for _ in range(polls):  # a bounded number of polls
        job = client.get(f"{JOBS}/{job_id}").json()
        if job["status"] in ("completed", "cancelled", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never finished")


def test_a_job_is_visible_only_to_its_key_and_admins(url, make_key):
    owner = make_key(scopes=["inference"])
    other = make_key(scopes=["inference"])
    admin_key = make_key(scopes=["inference", "admin"])
    admin_only = make_key(scopes=["admin"])
    items = [{"id": "a", "prompt": "Hello", "max_tokens": 4, "model": MODEL}]
    with _client(url, owner["key"]) as mine, _client(url, other["key"]) as theirs, \
            _client(url, admin_key["key"]) as admin, _client(url, ADMIN_KEY) as boot, \
            _client(url, admin_only["key"]) as no_inference:
        r = mine.post(JOBS, json={"items": items})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        for call in (lambda: theirs.get(f"{JOBS}/{job_id}"), lambda: theirs.post(f"{JOBS}/{job_id}/cancel")):
            refused = call()
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "batch_job_not_found"
        # An admin key without `inference` reads every key's jobs (as an `admin_read` key does), submits none.
        assert no_inference.get(f"{JOBS}/{job_id}").status_code == 200
        assert no_inference.post(JOBS, json={"items": items}).status_code == 403  # the inference scope, as the sync route
        job = _final(mine, job_id)
        assert job["status"] == "completed" and job["results"][0]["status"] == "ok"
        assert admin.get(f"{JOBS}/{job_id}").json()["results"] == job["results"]
        assert boot.get(f"{JOBS}/{job_id}").status_code == 200  # bootstrap keys are admins
        assert theirs.get(f"{JOBS}/{job_id}").status_code == 404  # still not theirs once finished


def test_a_jobs_items_follow_the_keys_model_allowlist(url, make_key):
    limited = make_key(scopes=["inference"], models=[])  # may use no model
    with _client(url, limited["key"]) as client:
        r = client.post(JOBS, json={"items": [{"id": "a", "prompt": "Hi", "max_tokens": 2, "model": MODEL}]})
        assert r.status_code == 202, r.text
        job = _final(client, r.json()["id"])
        sync = client.post("/api/v1/generate/batch", json={"items": [{"id": "a", "prompt": "Hi", "model": MODEL}]})
    assert job["status"] == "completed" and job["counts"]["failed"] == 1
    assert job["results"][0]["error"]["code"] == sync.json()["results"][0]["error"]["code"] == "model_not_found"


def _invalid_items(n: int) -> list[dict]:
    """Items without a prompt: each is its own error and never reaches a model (nor the key's limits)."""
    return [{"id": f"x{i}"} for i in range(n)]


def _slow_items(n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}-{i}", "prompt": f"Tell a long story, part {i} ({tag}):", "max_tokens": 48,
             "ignore_eos": True, "cache": False, "model": MODEL} for i in range(n)]


def test_a_submission_counts_against_the_keys_rpm(url, make_key):
    limited = make_key(scopes=["inference"], rate_limit_per_minute=2)
    with _client(url, limited["key"]) as client:
        accepted = [client.post(JOBS, json={"items": _invalid_items(2)}) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202], accepted[-1].text
        refused = client.post(JOBS, json={"items": _invalid_items(2)})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and int(refused.headers["retry-after"]) > 0


def test_unfinished_jobs_per_key_are_capped(url, make_key):
    """BATCH_JOBS_PER_KEY (4): the fifth unfinished job of a key is refused, through either
    ingress replica (the count is in Redis); a cancelled one frees its place."""
    key = make_key(scopes=["inference"], rate_limit_per_minute=10000)
    other = make_key(scopes=["inference"], rate_limit_per_minute=10000)
    with _client(url, key["key"]) as client, _client(url, other["key"]) as theirs:
        jobs = []
        try:
            for n in range(4):
                r = client.post(JOBS, json={"items": _slow_items(20, f"cap{n}")})
                assert r.status_code == 202, r.text
                jobs.append(r.json()["id"])
            refused = client.post(JOBS, json={"items": _invalid_items(1)})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_batch_jobs" and refused.headers["retry-after"]
            assert theirs.post(JOBS, json={"items": _invalid_items(1)}).status_code == 202  # per key
            cancelled = client.post(f"{JOBS}/{jobs.pop()}/cancel")
            assert cancelled.status_code in (200, 202), cancelled.text
            if cancelled.status_code == 202:
                _final(client, cancelled.json()["id"])
            again = client.post(JOBS, json={"items": _invalid_items(1)})
            assert again.status_code == 202, again.text
        finally:
            for job_id in jobs:  # stop the model work at once
                client.post(f"{JOBS}/{job_id}/cancel")


def test_an_over_long_item_id_refuses_the_job_and_is_never_echoed(url, make_key):
    key = make_key(scopes=["inference"])
    with _client(url, key["key"]) as client:
        r = client.post(JOBS, json={"items": [{"id": "a", "prompt": "Hi"}, {"id": "i" * 129, "prompt": "Hi"}]})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "items.1.id"
        assert client.get(JOBS).json()["data"] == []  # nothing was stored
        sync = client.post("/api/v1/generate/batch", json={"items": [{"id": "i" * 5000, "prompt": "Hi"}]})
    assert sync.status_code == 200 and sync.json()["results"][0].get("id") is None  # not echoed


def test_a_revoked_keys_running_job_stops_at_its_next_item(url, make_key, admin):
    key = make_key(scopes=["inference"])
    items = [{"id": f"r{i}", "prompt": f"Count: {i},", "max_tokens": 4, "cache": False, "model": MODEL}
             for i in range(150)]
    with _client(url, key["key"]) as client:
        r = client.post(JOBS, json={"items": items})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        for _ in range(600):  # until the job is answering items (bounded polls)
            counts = client.get(f"{JOBS}/{job_id}", params={"results": "false"}).json()["counts"]
            if counts["succeeded"] >= 1:
                break
            time.sleep(0.1)
        assert counts["succeeded"] >= 1 and counts["pending"] > 0, counts
        assert admin.delete(f"/api/v1/keys/{key['id']}").status_code == 200
    job = _final(admin, job_id)
    assert job["status"] == "cancelled" and job["error"]["code"] == "key_revoked", job.get("error")
    assert job["cancel_requested"] is False and job["owner"] == key["id"]
    ran = job["counts"]["succeeded"] + job["counts"]["failed"]
    assert ran < len(items) and job["counts"]["cancelled"] == len(items) - ran and job["counts"]["pending"] == 0
    stopped = [x for x in job["results"] if x["status"] == "error"]
    assert stopped and {x["error"]["code"] for x in stopped} == {"cancelled"}
    assert any("key_revoked" in x["error"]["message"] for x in stopped)


def test_admins_list_jobs_by_key_and_status_and_a_key_lists_its_own(url, make_key):
    first = make_key(scopes=["inference"])
    second = make_key(scopes=["inference"])
    with _client(url, first["key"]) as mine, _client(url, second["key"]) as theirs, _client(url, ADMIN_KEY) as boot:
        own = [mine.post(JOBS, json={"items": _invalid_items(1)}).json()["id"] for _ in range(2)]
        slow = mine.post(JOBS, json={"items": _slow_items(10, "listed")}).json()["id"]
        other = theirs.post(JOBS, json={"items": _invalid_items(1)}).json()["id"]
        for job_id in own:
            _final(mine, job_id)
        listed = boot.get(JOBS, params={"owner": first["id"]})
        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert page["object"] == "list" and [j["id"] for j in page["data"]] == [slow] + own[::-1]  # newest first
        assert {j["owner"] for j in page["data"]} == {first["id"]} and all("results" not in j for j in page["data"])
        done = boot.get(JOBS, params={"owner": first["id"], "status": "completed"}).json()["data"]
        assert [j["id"] for j in done] == own[::-1]
        one = boot.get(JOBS, params={"owner": first["id"], "limit": 1}).json()
        assert one["has_more"] and one["last_id"] == slow
        rest = boot.get(JOBS, params={"owner": first["id"], "after": one["last_id"]}).json()
        assert [j["id"] for j in rest["data"]] == own[::-1] and not rest["has_more"]
        everyone = {j["id"] for j in boot.get(JOBS, params={"limit": 100}).json()["data"]}
        assert {slow, other, *own} <= everyone
        assert {j["id"] for j in mine.get(JOBS).json()["data"]} == {slow, *own}  # its own only
        assert mine.get(JOBS, params={"owner": second["id"]}).json()["data"] == []
        assert [j["id"] for j in theirs.get(JOBS).json()["data"]] == [other]
        assert boot.get(JOBS, params={"status": "nonsense"}).status_code == 400
        assert boot.get(JOBS, params={"after": "../x"}).status_code == 400
        cancelled = boot.post(f"{JOBS}/{slow}/cancel")  # an admin cancels any key's job
        assert cancelled.status_code in (200, 202), cancelled.text
        assert _final(boot, slow)["status"] in ("cancelled", "completed")
