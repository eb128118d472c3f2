"""Concurrency, client disconnects, metrics across ingress replicas, JSON logs with request ids."""

import asyncio
import json
import re
import time

import httpx

from deployments.engine.sizing import MAX_AUTO_PARALLEL
from tests.integration.conftest import ALL_MODELS, DEFAULT, GEMMA, KEY
from tests.integration.sse import disconnect_mid_stream, parse_sse


def _model_figures(client, name):
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == name)


def test_concurrent_streams_to_both_models(base_url):
    async def one(client, model, i):
        body = {"model": model, "prompt": f"Story number {i}:", "max_tokens": 16, "stream": True, "ignore_eos": True}
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        events = parse_sse(r.text)
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        return "".join(e["choices"][0]["text"] for e in events)

    async def main():
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, timeout=300) as client:
            jobs = [one(client, model, i) for i in range(6) for model in (DEFAULT, GEMMA)]
            return await asyncio.gather(*jobs)

    texts = asyncio.run(main())
    assert len(texts) == 12 and all(t.strip() for t in texts)


def test_client_disconnect_cancels_generation(client):
    disconnect_mid_stream(client, lambda: _model_figures(client, DEFAULT))
    assert client.post("/api/v1/generate", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") and not labels:
            total += float(line.rsplit(" ", 1)[1])
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{"):line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _settled_scrape(scrape) -> str:
    """A scrape taken once earlier tests' events (other than scrapes) have all reached the hub:
    the other ingress replica ships its events up to METRICS_FLUSH_S after a request ends."""
    def counted(text):
        return _metric(text, "aicore_requests_total") - _metric(text, "aicore_requests_total", route="/api/v1/metrics")

    for _ in range(30):
        start = scrape()
        time.sleep(1.5)  # longer than METRICS_FLUSH_S (1 s in the tests)
        if counted(scrape()) == counted(start):
            break
    return start


def test_metrics_count_every_request_across_ingress_replicas(base_url):
    # Fresh keep-alive-less requests spread over both ingress replicas.
    headers = {"X-API-Key": KEY}
    scrape = lambda: httpx.get(base_url + "/api/v1/metrics", headers=headers, timeout=60).text  # noqa: E731
    route = "/api/v1/generate"
    start = _settled_scrape(scrape)
    before_ok = _metric(start, "aicore_requests_total", route=route, model=GEMMA, status="200")
    before_tokens = _metric(start, "aicore_completion_tokens_total", model=GEMMA)
    tokens = 0
    for i in range(8):
        r = httpx.post(base_url + route, headers=headers, timeout=120,
                       json={"model": GEMMA, "prompt": f"Fact {i}:", "max_tokens": 3, "ignore_eos": True})
        assert r.status_code == 200
        tokens += 3
    for _ in range(100):  # the other replica ships its events within METRICS_FLUSH_S
        text = scrape()
        if _metric(text, "aicore_requests_total", route=route, model=GEMMA, status="200") >= before_ok + 8:
            break
        time.sleep(0.2)
    assert _metric(text, "aicore_requests_total", route=route, model=GEMMA, status="200") == before_ok + 8
    assert _metric(text, "aicore_completion_tokens_total", model=GEMMA) == before_tokens + tokens
    assert _metric(text, "aicore_request_duration_seconds_count", route=route, model=GEMMA, status="200") >= 8
    assert "aicore_time_to_first_token_seconds_bucket" in text


def test_json_access_log_has_request_id_and_never_the_key(server, client):
    r = client.post("/api/v1/generate", json={"prompt": "Log me", "max_tokens": 2})
    request_id = r.headers["x-request-id"]
    records = []
    for _ in range(50):
        records = []
        for line in server.log().splitlines():
            start = line.find("{")
            if request_id in line and start >= 0:
                try:
                    records.append(json.loads(line[start:]))
                except ValueError:
                    continue
        if any(rec.get("logger") == "aicore.access" for rec in records):
            break
        time.sleep(0.2)
    access = [rec for rec in records if rec.get("logger") == "aicore.access"]
    assert access and access[0]["route"] == "/api/v1/generate" and access[0]["status"] == 200
    assert access[0]["key_id"].startswith("boot-") and KEY not in json.dumps(records)


def test_metrics_show_both_models_gauges_errors_and_speed(base_url):
    headers = {"X-API-Key": KEY}
    scrape = lambda: httpx.get(base_url + "/api/v1/metrics", headers=headers, timeout=60).text  # noqa: E731
    start = _settled_scrape(scrape)
    errors_before = _metric(start, "aicore_errors_total", type="invalid_request_error", code="context_length_exceeded")
    auth_before = _metric(start, "aicore_errors_total", type="authentication_error", code="invalid_api_key")
    speed_before = {m: _metric(start, "aicore_generation_tokens_per_second_count", model=m) for m in (DEFAULT, GEMMA)}
    for model in (DEFAULT, GEMMA):
        r = httpx.post(base_url + "/v1/completions", headers=headers, timeout=120,
                       json={"model": model, "prompt": "Numbers:", "max_tokens": 6, "ignore_eos": True})
        assert r.status_code == 200
    bad = httpx.post(base_url + "/api/v1/generate", headers=headers, json={"prompt": "x", "max_tokens": 5000})
    assert bad.status_code == 400
    assert httpx.get(base_url + "/api/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
    for _ in range(100):  # events from the other ingress replica arrive within METRICS_FLUSH_S
        text = scrape()
        if (_metric(text, "aicore_errors_total", type="authentication_error", code="invalid_api_key") > auth_before
                and _metric(text, "aicore_errors_total", code="context_length_exceeded") > errors_before
                and all(_metric(text, "aicore_generation_tokens_per_second_count", model=m) > speed_before[m]
                        for m in (DEFAULT, GEMMA))):
            break
        time.sleep(0.2)
    assert _metric(text, "aicore_errors_total", type="invalid_request_error",
                   code="context_length_exceeded") == errors_before + 1
    assert _metric(text, "aicore_errors_total", type="authentication_error", code="invalid_api_key") == auth_before + 1
    for model in (DEFAULT, GEMMA):
        assert _metric(text, "aicore_generation_tokens_per_second_count", model=model) == speed_before[model] + 1
        assert _metric(text, "aicore_generation_tokens_per_second_sum", model=model) > 0
        assert _metric(text, "aicore_model_state", model=model, state="ready") == 1
        assert _metric(text, "aicore_model_state", model=model, state="failed") == 0
        assert _metric(text, "aicore_model_replicas", model=model) == 1
        assert _metric(text, "aicore_model_resident_memory_bytes", model=model) > 50_000_000
        assert f'aicore_model_requests_in_flight{{model="{model}",node="' in text
    assert _metric(text, "aicore_ready") == 1
    assert "# TYPE aicore_errors_total counter" in text and "# TYPE aicore_model_state gauge" in text


def test_readiness_is_200_when_the_default_model_is_ready(base_url, client):
    r = httpx.get(base_url + "/api/v1/health/ready")  # no key: load balancers probe it
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["default_model"], body["reasons"]) == ("ready", DEFAULT, [])
    assert body["models"] == {m: "ready" for m in ALL_MODELS} and body["redis"] is None  # no REDIS_URL here
    assert 0 < body["memory_available_percent"] <= 100
    listing = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert all(len(listing[m]["node_id"]) == 56 for m in ALL_MODELS)  # a Ray node id (hex)


def test_log_dir_gets_json_records_from_ingress_and_model_replicas(log_dir, client):
    r = client.post("/api/v1/generate", json={"prompt": "File me", "max_tokens": 2})
    request_id = r.headers["x-request-id"]
    path = log_dir / "aicore.log"
    for _ in range(50):
        records = [json.loads(line) for line in path.read_text().splitlines()]  # every line is one JSON object
        if any(rec["request_id"] == request_id and rec["logger"] == "aicore.access" for rec in records):
            break
        time.sleep(0.2)
    assert any(rec["request_id"] == request_id and rec["logger"] == "aicore.access" for rec in records)
    loaded = {rec.get("model") for rec in records if rec["logger"] == "aicore.model" and rec["message"] == "model loaded"}
    assert loaded == ALL_MODELS  # written by the model replicas, not only the ingress


def test_requests_waiting_for_the_engine_show_as_queued(base_url, client):
    """More long streams than the replica has slots (the shipped SmolLM2 entry sizes its slots
    automatically, at most MAX_AUTO_PARALLEL): the slots fill and the rest wait (queued). With
    fewer streams than slots a request is queued only between its arrival and the engine's next
    step, which a poll may miss; so is the first stream before every stream has arrived (CI saw
    in_flight 1, queued 1), so the poll waits until all of them are at the replica."""
    seen = {}
    streams_wanted = MAX_AUTO_PARALLEL + 2

    async def consume(http, i):
        body = {"prompt": f"Queue story {i}:", "max_tokens": 400, "ignore_eos": True, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for _ in r.aiter_lines():
                pass

    async def main():
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, timeout=300) as http:
            streams = [asyncio.create_task(consume(http, i)) for i in range(streams_wanted)]
            try:
                for _ in range(300):  # the slots fill within moments; a stream lasts ~400 tokens
                    live = next(m for m in (await http.get("/api/v1/models")).json()["models"] if m["name"] == DEFAULT)
                    if live["in_flight"] == streams_wanted and live["queued"]:
                        seen.update(live, scrape=(await http.get("/api/v1/metrics")).text)
                        break
                    await asyncio.sleep(0.1)
            finally:  # closing the connections cancels the generations
                for task in streams:
                    task.cancel()
                outcomes = await asyncio.gather(*streams, return_exceptions=True)
            assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes

    asyncio.run(main())
    assert seen, "no request was ever reported queued"
    # at most MAX_AUTO_PARALLEL slots run, so at least two of the streams wait; at least one runs
    assert 2 <= seen["queued"] <= streams_wanted - 1
    assert f'aicore_model_requests_queued{{model="{DEFAULT}",node="' in seen["scrape"]
    for _ in range(300):  # bounded wait for the replica to drop the cancelled requests
        figures = _model_figures(client, DEFAULT)
        if figures["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert figures["in_flight"] == 0 and figures["queued"] == 0


def test_metrics_count_each_models_load_through_the_hub(base_url):
    headers = {"X-API-Key": KEY}
    scrape = lambda: httpx.get(base_url + "/api/v1/metrics", headers=headers, timeout=60).text  # noqa: E731
    r = httpx.post(base_url + "/api/v1/generate", headers=headers, timeout=120, json={"prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200
    for _ in range(100):  # a replica reports its load in the background once it is ready
        text = scrape()
        if all(_metric(text, "aicore_model_loads_total", model=m, outcome="ok") >= 1 for m in ALL_MODELS):
            break
        time.sleep(0.2)
    assert "# TYPE aicore_model_loads_total counter" in text
    for model in ALL_MODELS:
        loads = _metric(text, "aicore_model_loads_total", model=model, outcome="ok")
        assert loads >= 1
        assert _metric(text, "aicore_model_loads_total", model=model, outcome="failed") == 0
        assert _metric(text, "aicore_model_load_duration_seconds_count", model=model) == loads
        assert _metric(text, "aicore_model_load_duration_seconds_sum", model=model) > 0
        assert _metric(text, "aicore_model_replica_load_duration_seconds", model=model) > 0
