"""The tool answer scanner (serve_app/tool_stream.py) and the reading every channel shares
(serve_app/tool_calls.py): pieces split anywhere (inside escapes, surrogate pairs, keys) give
the same calls, arguments and text as the answer read whole, and as json.loads reads it."""

import json
import random

import pytest

from serve_app.protocol.openai import ChatCompletionRequest
from serve_app.tool_calls import ToolAnswer, read_answer
from serve_app.tool_stream import AnswerScanner, ArgumentsPiece, CallStart, TextPiece

ANSWERS = [
    '{"tool_call": {"name": "get_weather", "arguments": {"city": "Pa\\"}{ris", "unit": "celsius"}}}',
    '{ "tool_calls" : [ {"name":"a","arguments":{"x":[1,{"y":"}]"}], "z": null}},\n {"name": "b", "arguments": {}} ] }',
    '{"tool_call": {"name": "say", "arguments": {"text": "caf\\u00e9 \\ud83d\\ude00 \\\\ \\n \\/ \u00fc\u20ac\U0001F600"}}}',
    '{"response": "Hello \\"you\\" {not json} \\u00e9\\ud83d\\ude00\\n\\tend \u00fc"}',
    '{"response": {"intent": "refund", "note": "a \\"quoted\\" }", "n": [1, 2.5, true]}}',
    '{"response": ""}',
]


def _pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def _streamed(pieces: list[str]) -> tuple[list, str, dict]:
    scanner, events = AnswerScanner(), []
    for piece in pieces:
        events += scanner.feed(piece)
    events += scanner.finish()
    text = "".join(e.text for e in events if isinstance(e, TextPiece))
    arguments: dict = {}
    for event in events:
        if isinstance(event, ArgumentsPiece):
            arguments[event.index] = arguments.get(event.index, "") + event.text
    names = [(e.index, e.name) for e in events if isinstance(e, CallStart)]
    return names, text, arguments


@pytest.mark.parametrize("answer", ANSWERS)
def test_any_split_gives_what_json_reads(answer):
    data = json.loads(answer)
    listed = data.get("tool_calls") or ([data["tool_call"]] if "tool_call" in data else [])
    rng = random.Random(answer)
    splits = [[answer], list(answer)] + [[answer[:i], answer[i:]] for i in range(1, len(answer))]
    splits += [_pieces(answer, rng) for _ in range(50)]
    for pieces in splits:
        names, text, arguments = _streamed(pieces)
        assert names == [(i, c["name"]) for i, c in enumerate(listed)], pieces
        assert [json.loads(arguments[i]) for i in range(len(listed))] == [c["arguments"] for c in listed], pieces
        response = data.get("response")
        if isinstance(response, str):
            assert text == response, pieces
        elif response is not None:
            assert json.loads(text) == response, pieces
        else:
            assert text == ""


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_answer_read_whole_equals_the_stream(answer):
    content, calls, finish = read_answer(answer, "stop")
    names, text, arguments = _streamed(list(answer))
    if calls:
        assert content is None and finish == "tool_calls"
        assert [(c.name, c.arguments) for c in calls] == [(n, arguments[i]) for i, n in names]
        assert all(c.id.startswith("call_") for c in calls) and len({c.id for c in calls}) == len(calls)
    else:
        assert content == text and finish == "stop"


def test_a_stream_and_its_end_name_a_call_alike():
    answer = ToolAnswer()
    ids = []
    for piece in ['{"tool_calls": [{"name": "a", "argu', 'ments": {}}, {"name": "b', '", "arguments": {"k": 1}}]}']:
        ids += [answer.ids[e.index] for e in answer.feed(piece) if isinstance(e, CallStart)]
    answer.finish()
    content, calls, finish = answer.result("stop")
    assert [c.id for c in calls] == ids and [c.arguments for c in calls] == ["{}", '{"k": 1}']


def test_a_cut_answer_is_text_never_a_half_call():
    cut = '{"tool_call": {"name": "get_weather", "arguments": {"city": "Par'
    assert read_answer(cut, "length") == (cut, [], "length")


def test_a_lone_surrogate_becomes_a_replacement_character():
    content, _, _ = read_answer('{"response": "a\\ud83d b\\ude00"}', "stop")
    assert content == "a\ufffd b\ufffd"
    content.encode("utf-8")


def _request(**fields) -> ChatCompletionRequest:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}}}
    return ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], tools=[tool], **fields)


def test_response_format_shapes_the_text_answer_of_auto_only():
    schema = {"type": "object", "required": ["ok"], "additionalProperties": False,
              "properties": {"ok": {"type": "boolean"}}}
    spec = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    auto = _request(response_format=spec).tool_use()
    assert auto.response_schema == schema
    assert auto.answer_schema()["anyOf"][-1]["properties"]["response"] == schema
    assert json.dumps(schema) in auto.described()
    assert _request(response_format={"type": "json_object"}).tool_use().response_schema == {"type": "object"}
    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        tools = _request(response_format=spec, tool_choice=choice).tool_use()
        assert tools.response_schema is None and "response" not in json.dumps(tools.answer_schema())
    assert _request(response_format=spec, tool_choice="none").tool_use() is None


def test_a_bad_response_schema_beside_tools_is_named():
    from core.errors import InvalidRequest

    spec = {"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}}}
    with pytest.raises(InvalidRequest) as refused:
        _request(response_format=spec).tool_use().grammar()
    assert refused.value.param == "response_format.json_schema.schema" and "multipleOf" in str(refused.value)
