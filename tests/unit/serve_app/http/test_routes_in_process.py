"""The generation routes in-process (tests/unit/in_process.py): what reaches the replica, the
answer's shape on both API families, and every error (a client's mistake or a replica's failure)
as one OpenAI-style body with the right status. The same routes on real replicas:
tests/integration/test_api_v1.py, test_openai_client.py, test_auth_and_errors.py."""

import json

import pytest

from core.errors import BackendFailure, ContextLengthExceeded, ModelUnavailable, Overloaded
from core.types import Usage
from tests.unit.in_process import MODEL, FakeReplica, app_over, run

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}


def test_a_chat_completion_is_the_replicas_pieces_and_its_usage():
    replica = FakeReplica(pieces=("Hel", "lo"), usage=Usage(5, 2))

    async def scenario(c):
        return await c.post("/v1/chat/completions", json=CHAT)
    r = run(app_over(replica), scenario)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    sent = replica.requests[0]
    assert sent.messages[-1]["content"] == "Say hi." and sent.sampling.max_tokens == 8


def test_a_streamed_chat_completion_is_server_sent_events_ending_in_done():
    replica = FakeReplica(pieces=("One", " two", " three"))

    async def scenario(c):
        return await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    r = run(app_over(replica), scenario)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == "One two three"
    assert chunks[-1]["choices"] == [] or chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_api_v1_generate_answers_with_its_own_fields():
    replica = FakeReplica(pieces=(" blue",), usage=Usage(4, 1))

    async def scenario(c):
        return await c.post("/api/v1/generate", json={"prompt": "The sky is", "max_tokens": 4})
    r = run(app_over(replica), scenario)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == " blue" and body["model"] == MODEL and body["tokens_used"] == 5
    assert body["cached"] is False and body["timestamp"].endswith("Z") and body["processing_time"] >= 0
    assert replica.requests[0].prompt == "The sky is"


@pytest.mark.parametrize("failure,status,code", [
    (ContextLengthExceeded("the prompt and max_tokens pass the context", param="messages"), 400,
     "context_length_exceeded"),
    (BackendFailure("the model failed"), 500, "backend_error"),
    (ModelUnavailable("the model is not available"), 503, "model_unavailable"),
    (Overloaded("every slot is busy", retry_after_s=7), 503, "model_overloaded"),
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat"])
def test_a_replicas_error_is_one_openai_style_body_on_both_families(path, failure, status, code):
    async def scenario(c):
        return await c.post(path, json=CHAT)
    r = run(app_over(FakeReplica(fail=failure)), scenario)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] == failure.message and error["request_id"]
    assert error["param"] == failure.param
    if isinstance(failure, Overloaded):
        assert r.headers["retry-after"] == "7"


def test_an_unexpected_replica_error_is_a_500_that_tells_nothing_of_it():
    async def scenario(c):
        return await c.post("/v1/chat/completions", json=CHAT)
    r = run(app_over(FakeReplica(fail=RuntimeError("secret internals at /srv/x"))), scenario, raise_app_exceptions=False)
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "internal server error" and "secret" not in r.text


@pytest.mark.parametrize("body,status,code,param", [
    ({**CHAT, "model": "no-such-model"}, 404, "model_not_found", "model"),
    ({**CHAT, "max_tokens": 100000}, 400, "context_length_exceeded", "max_tokens"),
    ({**CHAT, "frobnicate": 1}, 400, "unknown_parameter", "frobnicate"),
    ({"messages": []}, 400, "invalid_value", "messages"),
    ({**CHAT, "temperature": -1}, 400, "invalid_value", "temperature"),
])
def test_a_clients_mistake_is_a_4xx_naming_it_and_never_reaches_the_replica(body, status, code, param):
    replica = FakeReplica()

    async def scenario(c):
        return await c.post("/v1/chat/completions", json=body)
    r = run(app_over(replica), scenario)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert replica.requests == []


def test_malformed_json_and_missing_or_wrong_keys():
    replica = FakeReplica()

    async def scenario(c):
        broken = await c.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
        anonymous = await c.post("/v1/chat/completions", json=CHAT, headers={"X-API-Key": ""})
        wrong = await c.post("/v1/chat/completions", json=CHAT, headers={"X-API-Key": "not-the-key-0123456789"})
        return broken, anonymous, wrong
    broken, anonymous, wrong = run(app_over(replica), scenario)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert replica.requests == []
