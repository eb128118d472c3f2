"""Continuous batching through the real Serve app: concurrent streams, overload answers, LoRA groups.

The engine's step record is asserted in tests/engine/test_llama_engine.py (in-process, real weights);
here the same engine answers real HTTP clients inside Ray Serve replicas.
"""

import asyncio
import threading
import time

import httpx

from tests.integration.conftest import DEFAULT, GGUF_ADAPTERS, KEY, NARROW, TINY, TINY_GGUF
from tests.integration.sse import parse_sse

PROMPTS = [f"List three facts about the number {n}." for n in range(16)]


async def _completion(client: httpx.AsyncClient, prompt: str, **extra) -> dict:
    body = {"model": DEFAULT, "prompt": prompt, "max_tokens": 24, "temperature": 0, "cache": False,
            "ignore_eos": True, **extra}  # every answer has its 24 tokens (an end-of-sequence first is possible)
    r = await client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def _streamed(client: httpx.AsyncClient, prompt: str) -> str:
    body = {"model": DEFAULT, "prompt": prompt, "max_tokens": 24, "temperature": 0, "cache": False, "stream": True,
            "ignore_eos": True}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        text = "".join([piece async for piece in r.aiter_text()])
    return "".join(e["choices"][0]["text"] for e in parse_sse(text) if e["choices"])


def test_sixteen_concurrent_streams_equal_the_same_requests_alone(base_url):
    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": KEY}, timeout=300) as client:
            alone = [(await _completion(client, p))["choices"][0]["text"] for p in PROMPTS]
            together = await asyncio.gather(*(_streamed(client, p) for p in PROMPTS))
            return alone, together

    alone, together = asyncio.run(scenario())
    assert together == alone
    assert all(alone)


def test_priority_field_is_accepted_and_validated(client):
    ok = client.post("/v1/completions", json={"model": DEFAULT, "prompt": "Hi", "max_tokens": 2, "priority": "batch"})
    assert ok.status_code == 200, ok.text
    bad = client.post("/v1/completions", json={"model": DEFAULT, "prompt": "Hi", "max_tokens": 2, "priority": "vip"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"


def _hold(base_url: str, out: dict, started: threading.Event) -> None:
    """A long stream on the narrow model (one slot): records status, completion tokens and the end."""
    body = {"model": NARROW, "prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base_url + "/v1/completions", json=body, headers={"X-API-Key": KEY}, timeout=600) as r:
        out["status"], text = r.status_code, ""
        for piece in r.iter_text():
            text += piece
            started.set()
        out["events"] = parse_sse(text)
    started.set()


def test_a_full_queue_answers_503_with_retry_after_at_once_and_admitted_requests_complete(formats_server):
    running, waiting = {}, {}
    first_started, second_started = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_hold, args=(formats_server.base_url, running, first_started))]
    threads[0].start()
    assert first_started.wait(300)
    threads.append(threading.Thread(target=_hold, args=(formats_server.base_url, waiting, second_started)))
    threads[1].start()
    with httpx.Client(base_url=formats_server.base_url, headers={"X-API-Key": KEY}, timeout=300) as client:
        for _ in range(3000):  # until the second request is in the replica's waiting room
            listing = client.get("/api/v1/models").json()["models"]
            if next(m for m in listing if m["name"] == NARROW).get("queued"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the second request never showed as queued")
        refused = client.post("/v1/completions", json={"model": NARROW, "prompt": "Hello", "max_tokens": 4})
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["type"] == "overloaded_error" and error["code"] == "model_overloaded"
    assert int(refused.headers["Retry-After"]) >= 1
    for thread in threads:
        thread.join(600)
    for out in (running, waiting):  # both admitted requests ran to their end
        assert out["status"] == 200
        assert out["events"][-1]["usage"]["completion_tokens"] == 300


def test_two_adapters_and_the_base_model_concurrently_all_answer_correctly(formats_client):
    models = [TINY_GGUF] + [f"{TINY_GGUF}:{a}" for a in GGUF_ADAPTERS]
    body = {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0, "ignore_eos": True, "cache": False}
    expected = {}
    for model in models:  # transformers on the same weights: the reference for each adapter
        r = formats_client.post("/v1/completions", json={**body, "model": model.replace(TINY_GGUF, TINY)})
        expected[model] = r.json()["choices"][0]["text"]
    assert len(set(expected.values())) == 3

    async def scenario():
        async with httpx.AsyncClient(base_url=str(formats_client.base_url), headers={"X-API-Key": KEY},
                                     timeout=300) as client:
            async def one(model):
                r = await client.post("/v1/completions", json={**body, "model": model})
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["text"]

            return await asyncio.gather(*(one(m) for m in models * 3))

    answers = asyncio.run(scenario())
    assert answers == [expected[m] for m in models * 3]
