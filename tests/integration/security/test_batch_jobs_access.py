"""Batch jobs with stored keys and Redis: a job is its key's (and admins'); the key's checks apply."""

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
        assert no_inference.get(f"{JOBS}/{job_id}").status_code == 403  # the inference scope, as the sync route
        assert no_inference.post(JOBS, json={"items": items}).status_code == 403
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
    assert job["results"][0]["error"]["code"] == sync.json()["results"][0]["error"]["code"] == "model_not_allowed"
