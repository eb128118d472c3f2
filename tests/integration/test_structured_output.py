"""JSON mode, JSON schemas and tool calls through the real app, with the official `openai` package.

Every constrained answer is parsed and validated with jsonschema; the SDK's own `parse()` and its
tool loop run unchanged. SmolLM2 (GGUF) answers; its chat template knows no tools, so they go
through the generic tool format under a grammar (serve_app/tool_calls.py).
"""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from websockets.sync.client import connect

from tests.integration.conftest import DEFAULT, KEY
from tests.structured_models import EMAIL, Address, Triage

TRIAGE_SCHEMA = to_strict_json_schema(Triage)
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": TRIAGE_SCHEMA, "strict": True}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 40},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def oai(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


def _chat(oai, **kwargs):
    return oai.chat.completions.create(**{"model": DEFAULT, "max_tokens": 300, **kwargs})


def test_json_mode_answers_a_json_object(oai):
    r = _chat(oai, messages=[{"role": "user", "content": 'Give a JSON object with "name" and "age" for Ann, 31.'}],
              response_format={"type": "json_object"}, temperature=0)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_sdk_parse_returns_the_pydantic_object(oai):
    for seed in range(3):
        r = oai.beta.chat.completions.parse(model=DEFAULT, max_tokens=300, temperature=0.7, seed=seed,
                                            messages=[{"role": "user", "content": EMAIL}], response_format=Triage)
        parsed = r.choices[0].message.parsed
        assert isinstance(parsed, Triage) and isinstance(parsed.sender, Address)


def test_streamed_schema_answers_validate(oai):
    stream = _chat(oai, messages=[{"role": "user", "content": EMAIL}], response_format=RESPONSE_FORMAT,
                   temperature=0.7, seed=5, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), TRIAGE_SCHEMA)


def test_sixteen_concurrent_constrained_and_free_requests(oai):
    def one(i: int):
        if i % 2:
            return None, _chat(oai, messages=[{"role": "user", "content": f"Tell me about the number {i}."}],
                               max_tokens=40, temperature=0.7, seed=i)
        return i, _chat(oai, messages=[{"role": "user", "content": EMAIL}], response_format=RESPONSE_FORMAT,
                        temperature=0.7, seed=i)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    for constrained, r in answers:
        if constrained is not None:
            assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
            jsonschema.validate(json.loads(r.choices[0].message.content), TRIAGE_SCHEMA)
        else:
            assert r.choices[0].message.content


def test_tool_call_round_trip_with_the_sdk(oai):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = _chat(oai, messages=messages, tools=[WEATHER, TIME], tool_choice="required", temperature=0.7, seed=1)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    schema = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    # the SDK's loop: the assistant's calls (content null) and the tool's result go back
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"})
    final = _chat(oai, messages=messages, tools=[WEATHER, TIME], tool_choice="none", max_tokens=40, temperature=0)
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.content


def test_a_named_function_is_the_one_called_and_auto_may_answer(oai):
    r = _chat(oai, messages=[{"role": "user", "content": "Paris?"}], tools=[WEATHER, TIME],
              tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False,
              temperature=0.7, seed=2)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    assert "city" in json.loads(calls[0].function.arguments)
    auto = _chat(oai, messages=[{"role": "user", "content": "Hello! How are you?"}], tools=[WEATHER],
                 tool_choice="auto", temperature=0)
    message = auto.choices[0].message
    assert (message.content is not None) != bool(message.tool_calls)  # either a text answer or calls


def test_streamed_tool_calls_arrive_as_deltas(oai):
    stream = _chat(oai, messages=[{"role": "user", "content": "Weather in Rome, celsius?"}], tools=[WEATHER],
                   tool_choice="required", temperature=0, stream=True)
    chunks = [c for c in stream if c.choices]
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].function.name == "get_weather"
    jsonschema.validate(json.loads("".join(d.function.arguments or "" for d in deltas)),
                        WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("body, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema", "'nope'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}}}},
     "response_format.json_schema.schema", "multipleOf"),
    ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
    ({"audio": {"voice": "alloy"}}, "audio", "audio"),
    ({"n": 9}, "n", "8"),
    ({"frobnicate": 1}, "frobnicate", "unrecognized"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"logit_bias": {"99999999": 5}}, "logit_bias", "99999999"),
])
def test_what_cannot_be_honoured_is_refused_by_name(client, body, param, words):
    r = client.post("/v1/chat/completions", json={
        "model": DEFAULT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_a_relaxed_schema_drops_what_it_cannot_enforce(client):
    schema = {"type": "object", "required": ["n"], "additionalProperties": False,
              "properties": {"n": {"type": "number", "multipleOf": 3}}}
    r = client.post("/v1/chat/completions", json={
        "model": DEFAULT, "messages": [{"role": "user", "content": "A number as JSON."}], "max_tokens": 40,
        "temperature": 0, "response_format": {"type": "json_schema",
                                              "json_schema": {"name": "n", "strict": False, "schema": schema}}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"])["n"], (int, float))


def test_api_v1_websocket_and_batch_honour_response_format(client, base_url):
    schema = {"type": "object", "additionalProperties": False, "required": ["intent", "reply_needed"],
              "properties": {"intent": {"enum": ["refund", "question", "other"]}, "reply_needed": {"type": "boolean"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "mail", "schema": schema}}
    r = client.post("/api/v1/chat", json={"messages": [{"role": "user", "content": EMAIL}], "max_tokens": 60,
                                          "temperature": 0.7, "response_format": response_format})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["response"]), schema)
    r = client.post("/api/v1/generate", json={"prompt": "A JSON object about a cat:", "max_tokens": 60,
                                              "temperature": 0.7, "response_format": {"type": "json_object"}})
    assert r.status_code == 200 and isinstance(json.loads(r.json()["response"]), dict), r.text
    items = [{"id": f"mail-{i}", "type": "chat", "messages": [{"role": "user", "content": EMAIL}], "max_tokens": 60,
              "temperature": 0.7, "seed": i, "response_format": response_format} for i in range(2)]
    r = client.post("/api/v1/generate/batch", json={"items": items})
    assert r.status_code == 200, r.text
    for result in r.json()["results"]:
        assert result["status"] == "ok", result
        jsonschema.validate(json.loads(result["result"]["response"]), schema)
    with connect(base_url.replace("http://", "ws://", 1) + "/api/v1/ws") as ws:
        ws.send(json.dumps({"type": "auth", "api_key": KEY}))
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps({"type": "chat", "id": "j", "messages": [{"role": "user", "content": EMAIL}],
                            "max_tokens": 60, "response_format": response_format}))
        while (message := json.loads(ws.recv()))["type"] == "token":
            pass
        assert message["type"] == "done", message
        jsonschema.validate(json.loads(message["response"]), schema)


def test_logprobs_in_openai_shape_streamed_and_not(oai):
    messages = [{"role": "user", "content": "Name a colour."}]
    r = _chat(oai, messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
              extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 8 and "".join(t.token for t in content) == r.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 and bytes(t.bytes).decode() == t.token for t in content)
    stream = _chat(oai, messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                   stream=True, extra_body={"ignore_eos": True})
    streamed = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    completion = oai.completions.create(model=DEFAULT, prompt="The sky is", max_tokens=5, temperature=0, logprobs=3,
                                        extra_body={"ignore_eos": True})
    lp = completion.choices[0].logprobs
    assert len(lp.tokens) == 5 and len(lp.top_logprobs[0]) == 3 and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == completion.choices[0].text
