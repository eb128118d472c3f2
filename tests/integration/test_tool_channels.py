"""Tool calls beyond the basics, through the real app and SmolLM2: a response_format beside tools,
argument fragments streamed as OpenAI streams them, and tools on `/api/v1/chat`, WebSocket and
batch items (one code path: serve_app/tool_calls.py). Every call's arguments are validated
against the function's schema with jsonschema, every JSON text answer against its schema."""

import json

import jsonschema
import openai
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import DEFAULT, KEY
from tests.integration.test_structured_output import TIME, WEATHER

WEATHER_SCHEMA = WEATHER["function"]["parameters"]
ROCKET = {"type": "function", "function": {
    "name": "launch_rocket", "description": "Launch a rocket. Only when the user asks for a launch.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["target"],
                   "properties": {"target": {"enum": ["moon", "mars"]}}}}}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME["function"]["parameters"],
           "launch_rocket": ROCKET["function"]["parameters"]}
REPLY = {"type": "object", "additionalProperties": False, "required": ["answer", "mood"],
         "properties": {"answer": {"type": "string", "maxLength": 80}, "mood": {"enum": ["happy", "neutral"]}}}
REPLY_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": REPLY, "strict": True}}
ASK = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]

pytestmark = pytest.mark.integration  # the session's real server (conftest), SmolLM2 answers


@pytest.fixture
def oai(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


def _valid_call(call: dict) -> None:
    assert call["type"] == "function" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


def test_response_format_shapes_the_text_answer_beside_tools(oai):
    greeting = [{"role": "system", "content": "Answer greetings directly; the tool is only for rocket launches."},
                {"role": "user", "content": "Hi there! How are you today?"}]
    texts = 0
    for seed in range(10):
        r = oai.chat.completions.create(model=DEFAULT, messages=greeting, tools=[ROCKET], tool_choice="auto",
                                        parallel_tool_calls=False, response_format=REPLY_FORMAT, max_tokens=300,
                                        temperature=0.7, seed=seed)
        choice = r.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            _valid_call(choice.message.tool_calls[0].model_dump())
        elif choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), REPLY)
            texts += 1
        else:  # cut by max_tokens: the raw text, never a half call
            assert choice.finish_reason == "length" and choice.message.content, choice
    assert texts, "no text answer in 10 tries: the response branch was never taken"
    stream = oai.chat.completions.create(model=DEFAULT, messages=greeting, tools=[ROCKET], tool_choice="auto",
                                         response_format={"type": "json_object"}, max_tokens=200, temperature=0.7,
                                         seed=1, stream=True, extra_body={"cache": False})
    chunks = [c for c in stream if c.choices]
    calls = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    if not calls:  # a text answer streams as content: the JSON object, in pieces
        assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in chunks)), dict)


def test_with_required_the_response_format_leaves_the_call_alone(oai):
    r = oai.chat.completions.create(model=DEFAULT, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                    response_format=REPLY_FORMAT, max_tokens=200, temperature=0.7, seed=3)
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    _valid_call(r.choices[0].message.tool_calls[0].model_dump())


def test_streamed_arguments_arrive_in_fragments_that_join_to_the_answer(oai):
    kwargs = dict(model=DEFAULT, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=200,
                  temperature=0, extra_body={"cache": False})
    whole = oai.chat.completions.create(**kwargs).choices[0].message.tool_calls
    chunks = [c for c in oai.chat.completions.create(stream=True, **kwargs) if c.choices]
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    first, fragments = deltas[0], deltas[1:]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (0, "function",
                                                                                        "get_weather", "")
    assert first.id.startswith("call_") and all(d.id is None and d.function.name is None for d in fragments)
    assert len(fragments) > 1, "the arguments came in one piece"
    joined = "".join(d.function.arguments for d in fragments)
    assert joined == whole[0].function.arguments
    jsonschema.validate(json.loads(joined), WEATHER_SCHEMA)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks)


def test_api_v1_chat_calls_tools(client):
    body = {"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "max_tokens": 200,
            "temperature": 0.7, "seed": 4}
    r = client.post("/api/v1/chat", json=body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["finish_reason"] == "tool_calls" and reply["response"] == ""
    _valid_call(reply["tool_calls"][0])
    r = client.post("/api/v1/chat", json={**body, "tool_choice": "none", "max_tokens": 20})
    assert r.status_code == 200 and "tool_calls" not in r.json() and "finish_reason" not in r.json(), r.text


def test_api_v1_chat_streams_the_calls_in_its_done_event(client):
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 200, "temperature": 0,
            "stream": True, "cache": False}
    with client.stream("POST", "/api/v1/chat", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    done = events[-1]
    assert done["done"] and done["finish_reason"] == "tool_calls"
    assert all(not e["response"] for e in events)  # no text answer: nothing streamed as text
    _valid_call(done["tool_calls"][0])


def test_websocket_chat_calls_tools_and_keeps_them_in_its_session(base_url):
    """One socket stays on one ingress replica, so its session is there without Redis (this test
    server has none): the second turn sends only the tool's result and the model reads the call."""
    def ask(ws, rid: str, **body) -> dict:
        ws.send(json.dumps({"type": "chat", "id": rid, "max_tokens": 200, "temperature": 0.7, "seed": 2, **body}))
        while (message := json.loads(ws.recv()))["type"] == "token":
            pass
        assert message["type"] == "done", message
        return message

    with connect(base_url.replace("http://", "ws://", 1) + "/api/v1/ws") as ws:
        ws.send(json.dumps({"type": "auth", "api_key": KEY}))
        assert json.loads(ws.recv())["type"] == "ready"
        first = ask(ws, "t1", messages=ASK, tools=[WEATHER, TIME], session_id="ws-tools",
                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
        assert first["finish_reason"] == "tool_calls" and first["response"] == "", first
        assert {c["function"]["name"] for c in first["tool_calls"]} == {"get_weather"}
        _valid_call(first["tool_calls"][0])
        result = [{"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "18 degrees"}]
        second = ask(ws, "t2", messages=result, session_id="ws-tools", max_tokens=20)
        alone = ask(ws, "t3", messages=result, max_tokens=20)
    assert second["response"] and "tool_calls" not in second
    # the session's turn read the question and the call before the result
    assert second["usage"]["prompt_tokens"] >= alone["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]


def test_batch_items_call_tools_and_take_tool_messages(client):
    earlier = {"id": "call_earlier", "type": "function",
               "function": {"name": "get_time", "arguments": '{"city": "Rome"}'}}
    items = [{"id": "a", "type": "chat", "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required",
              "max_tokens": 200, "temperature": 0.7, "seed": 7},
             {"id": "b", "type": "chat", "max_tokens": 200, "temperature": 0.7, "seed": 8,
              "tools": [WEATHER, TIME], "tool_choice": "required",
              "messages": [{"role": "user", "content": "Time in Rome, then the weather there?"},
                           {"role": "assistant", "content": None, "tool_calls": [earlier]},
                           {"role": "tool", "tool_call_id": "call_earlier", "content": "09:12"}]}]
    r = client.post("/api/v1/generate/batch", json={"items": items})
    assert r.status_code == 200, r.text
    for result in r.json()["results"]:
        assert result["status"] == "ok", result
        assert result["result"]["finish_reason"] == "tool_calls"
        _valid_call(result["result"]["tool_calls"][0])


def test_tools_on_api_v1_refuse_what_cannot_be_honoured(client):
    r = client.post("/api/v1/chat", json={"messages": ASK, "tools": [WEATHER, WEATHER], "max_tokens": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    r = client.post("/api/v1/chat", json={"messages": ASK, "tools": [WEATHER], "max_tokens": 5,
                                          "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice", r.text
