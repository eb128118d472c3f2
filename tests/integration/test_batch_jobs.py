"""Asynchronous batch jobs through the real app: two ingress replicas, no Redis (the state hub).

A job is accepted by one ingress replica and polled through whichever replica Serve's proxy
picks, so these tests also show that the job state is shared. Ownership with stored keys and
Redis: tests/integration/security/test_batch_jobs_access.py.
"""

import time

from tests.integration.conftest import DEFAULT, GEMMA

JOBS = "/api/v1/generate/batch/jobs"
GREEDY = [
    {"id": "g1", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "cache": False},
    {"id": "c1", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 10, "temperature": 0,
     "cache": False, "format": "email", "email": {"subject": "Colours"}},
    {"id": "bad", "prompt": "x", "temperature": 9},
    {"id": "g2", "model": GEMMA, "prompt": "One, two,", "max_tokens": 8, "temperature": 0, "cache": False},
]


def wait_final(client, job_id: str, polls: int = 600) -> dict:
    """Poll until the job is final (a bounded number of polls, not a time limit on the work)."""
    for _ in range(polls):
        r = client.get(f"{JOBS}/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("completed", "cancelled", "failed"):
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never finished: {r.json()}")


def _comparable(result: dict) -> dict:
    """An item's result without what differs from run to run (timing, request id)."""
    if result["status"] == "ok":
        answer = {k: v for k, v in result["result"].items() if k not in ("processing_time", "timestamp")}
        return {**result, "result": answer}
    return {**result, "error": {k: v for k, v in result["error"].items() if k != "request_id"}}


def test_a_job_is_accepted_polled_and_gives_what_the_sync_endpoint_gives(client):
    r = client.post(JOBS, json={"items": GREEDY})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] in ("queued", "running") and accepted["counts"]["items"] == 4
    assert r.headers["location"] == accepted["status_url"] == f"{JOBS}/{accepted['id']}"
    job = wait_final(client, accepted["id"])
    assert job["status"] == "completed" and job["counts"] == {
        "items": 4, "succeeded": 3, "failed": 1, "cancelled": 0, "pending": 0}
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    assert job["expires_at"] > job["finished_at"]

    sync = client.post("/api/v1/generate/batch", json={"items": GREEDY})
    assert sync.status_code == 200, sync.text
    assert [_comparable(x) for x in job["results"]] == [_comparable(x) for x in sync.json()["results"]]
    assert job["tokens_used"] == sync.json()["totals"]["tokens_used"]
    assert job["results"][1]["result"]["email"]["subject"] == "Re: Colours"
    assert job["results"][3]["result"]["model"] == GEMMA

    brief = client.get(f"{JOBS}/{accepted['id']}", params={"results": "false"}).json()
    assert "results" not in brief and brief["counts"] == job["counts"]


def _model_figures(client, name):
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == name)


def test_cancel_stops_running_items_and_leaves_the_rest_unrun(client):
    before = _model_figures(client, DEFAULT)["cancelled"]
    items = [{"id": f"long-{i}", "prompt": f"Count to a thousand, story {i}:", "max_tokens": 400, "ignore_eos": True,
              "cache": False} for i in range(8)]
    job_id = client.post(JOBS, json={"items": items}).json()["id"]
    for _ in range(600):  # until the model is generating the job's first items
        if _model_figures(client, DEFAULT)["in_flight"] > 0:
            break
        time.sleep(0.1)
    r = client.post(f"{JOBS}/{job_id}/cancel")
    assert r.status_code in (200, 202), r.text
    job = r.json() if r.status_code == 200 else wait_final(client, job_id)
    assert job["status"] == "cancelled" and job["cancel_requested"] is True
    counts = job["counts"]
    assert counts["cancelled"] >= 4 and counts["succeeded"] < 8 and counts["pending"] == 0
    assert counts["succeeded"] + counts["cancelled"] == 8
    assert [x["index"] for x in job["results"]] == list(range(8))
    stopped = [x for x in job["results"] if x["status"] == "error"]
    assert {x["error"]["code"] for x in stopped} == {"cancelled"}
    assert any(x["error"]["message"].endswith("while this item ran") for x in stopped)
    assert any(x["error"]["message"].endswith("before this item ran") for x in stopped)
    for _ in range(300):  # bounded wait for the replica to drop the cancelled generations
        figures = _model_figures(client, DEFAULT)
        if figures["cancelled"] > before and figures["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert figures["cancelled"] > before and figures["in_flight"] == 0  # the model stopped generating
    assert client.post(f"{JOBS}/{job_id}/cancel").json()["status"] == "cancelled"  # final stays final


def test_job_mistakes_are_4xx(client, base_url):
    import httpx

    assert client.post(JOBS, json={"items": []}).status_code == 400
    too_many = client.post(JOBS, json={"items": [{"id": str(i), "prompt": "Hi"} for i in range(1001)]})
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_items"
    assert client.post(JOBS, json={"items": [{"id": "a", "prompt": "x"}], "format": "pdf"}).status_code == 400
    assert client.post(JOBS, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    for path in (f"{JOBS}/bjob_{'0' * 24}", f"{JOBS}/nonsense"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "batch_job_not_found"
        assert client.post(path + "/cancel").status_code == 404
    assert httpx.post(base_url + JOBS, json={"items": [{"id": "a", "prompt": "x"}]}).status_code == 401
