"""Tools in the Hermes / Qwen 2.5 format (serve_app/hermes_tools.py): the scanner reads an answer
split anywhere into the same events as read whole; a tool-capable template (tests/tool_templates.py)
rendered by llama-cpp-python's real Jinja formatter shows the tools, the calls and the results;
the ToolUse of such a model renders natively and constrains with the Hermes grammar."""

import json

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from deployments.chat_template import tool_format
from deployments.config import ModelConfigError, load_models_file
from serve_app.hermes_tools import HermesScanner
from serve_app.protocol.openai import ChatCompletionRequest
from serve_app.tool_calls import for_template
from serve_app.tool_stream import ArgumentsPiece, CallStart, TextPiece
from tests.tool_templates import HERMES_TEMPLATE

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                            "parameters": {"type": "object", "required": ["city"],
                                                           "properties": {"city": {"type": "string"}}}}}
ANSWERS = [  # (answer, [(name, arguments)], text)
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"}{ris</tool_call>"}}\n</tool_call>',
     [("get_weather", {"city": 'Pa"}{ris</tool_call>'})], ""),
    ('<tool_call>\n{ "name" : "a", "arguments" : {"x": [1, {"y": "}]"}], "z": null} } \n</tool_call>\n'
     '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>', [("a", {"x": [1, {"y": "}]"}], "z": None}),
                                                                   ("b", {})], ""),
    ('<tool_call>\n{"name": "say", "arguments": {"text": "caf\\u00e9 \\ud83d\\ude00 \u00fc\U0001F600"}}\n</tool_call>',
     [("say", {"text": "caf\u00e9 \U0001F600 \u00fc\U0001F600"})], ""),
    ('Hello <tool_call> is just text here {"name": "x"} \u00e9\U0001F600', [],
     'Hello <tool_call> is just text here {"name": "x"} \u00e9\U0001F600'),
    ('{"answer": "a JSON text answer"}', [], '{"answer": "a JSON text answer"}'),
]


def _read(pieces: list[str]) -> tuple[list, dict, str, HermesScanner]:
    scanner, events = HermesScanner(), []
    for piece in pieces:
        events += scanner.feed(piece)
    events += scanner.finish()
    names = [(e.index, e.name) for e in events if isinstance(e, CallStart)]
    arguments: dict = {}
    for event in events:
        if isinstance(event, ArgumentsPiece):
            arguments[event.index] = arguments.get(event.index, "") + event.text
    return names, arguments, "".join(e.text for e in events if isinstance(e, TextPiece)), scanner


@pytest.mark.parametrize("answer, calls, text", ANSWERS)
def test_any_split_gives_the_answer_read_whole(answer, calls, text):
    data = answer.encode()
    splits = [[answer], list(answer)]
    for cut in range(1, len(data)):  # every byte boundary that is a character boundary
        head = data[:cut]
        try:
            splits.append([head.decode(), data[cut:].decode()])
        except UnicodeDecodeError:
            continue
    for pieces in splits:
        names, arguments, streamed, scanner = _read(pieces)
        assert names == [(i, name) for i, (name, _) in enumerate(calls)], pieces
        assert [json.loads(arguments[i]) for i in range(len(calls))] == [a for _, a in calls], pieces
        assert streamed == text and "".join(scanner.text) == text, pieces
        assert scanner.complete and [c.name for c in scanner.calls] == [n for n, _ in calls]


def test_a_call_cut_short_is_not_complete():
    for cut in ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', "<tool_ca"):
        _, _, text, scanner = _read([cut])
        assert not scanner.complete and text == ""


def test_the_template_detects_its_tool_format():
    assert tool_format(HERMES_TEMPLATE) == "hermes"
    assert tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert tool_format("{% if tools %}{{ tools | tojson }}{% endif %}") == "generic"


def _request(**extra) -> ChatCompletionRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, "tools": [WEATHER], **extra})


def test_the_real_formatter_renders_tools_calls_and_results_natively():
    body = _request(tool_choice="required")
    tools = body.tool_use().for_model(tool_format(HERMES_TEMPLATE))
    messages = tools.prompt(for_template([m.as_dict() for m in body.messages], native=True))
    formatter = Jinja2ChatFormatter(template=HERMES_TEMPLATE, eos_token="<|im_end|>", bos_token="")
    prompt = formatter(messages=messages, tools=[dict(t) for t in tools.template_tools()]).prompt
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert "<tools>\n" + json.dumps(tools.template_tools()[0], ensure_ascii=False) + "\n</tools>" in prompt
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>") in prompt
    assert "<|im_start|>user\n<tool_response>\n18 degrees\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n") and '"tool_call":' not in prompt  # no generic JSON


def test_the_hermes_grammar_holds_each_tools_schema():
    auto = _request().tool_use().for_model("hermes")
    grammar = auto.grammar()
    assert 'call ::= "<tool_call>\\n" call-root "\\n</tool_call>"' in grammar
    assert "root ::= calls | ([^<] [^\\x00]*)?" in grammar and '"\\"get_weather\\""' in grammar
    required = _request(tool_choice="required", parallel_tool_calls=False).tool_use().for_model("hermes")
    assert "root ::= calls\n" in required.grammar() and "calls ::= call\n" in required.grammar()
    assert required.prompt([{"role": "user", "content": "hi"}]) == [{"role": "user", "content": "hi"}]
    generic = _request().tool_use().for_model("generic")  # rendered natively, answered as the JSON object
    assert generic.prompt([{"role": "user", "content": "hi"}])[0]["content"].startswith("Answer with one JSON")
    assert _request().tool_use().template_tools() is None  # a template without tools: described in text


def test_a_models_json_template_file_is_read_and_a_broken_one_names_its_model(tmp_path):
    (tmp_path / "hermes.jinja").write_text(HERMES_TEMPLATE)
    entry = {"type": "gguf", "path": "m.gguf", "chat_template": "hermes.jinja"}
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": {"m": entry}}))
    assert load_models_file(config).models["m"].chat_template == HERMES_TEMPLATE
    config.write_text(json.dumps({"models": {"m": {**entry, "chat_template": "{% for m in messages %}"}}}))
    with pytest.raises(ModelConfigError, match="model 'm', field chat_template: the chat template does not compile"):
        load_models_file(config)
    config.write_text(json.dumps({"models": {"m": {**entry, "chat_template": "missing.jinja"}}}))
    with pytest.raises(ModelConfigError, match="model 'm', field chat_template: template file .* cannot be read"):
        load_models_file(config)
