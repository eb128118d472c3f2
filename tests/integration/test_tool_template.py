"""Tools rendered by the model's own chat template: the real SmolLM2 GGUF whose models.json entry
sets a Hermes / Qwen 2.5 style `chat_template` (tests/tool_templates.py, a .jinja file beside the
formats app's models.json). The prompt the replica reads is checked by its token count against
the same template rendered here with llama-cpp-python and tokenized with the model's own vocabulary;
calls come back as `tool_calls` whose arguments validate, streamed and whole, on /v1 and /api/v1;
the SDK's tool loop (the assistant's calls, then the tool's result) goes back to the template natively."""

import json
from pathlib import Path

import jsonschema
import openai
import pytest
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from deployments.weights import resolve_weights
from tests.integration.conftest import HERMES, KEY, SMOLLM2_PATH
from tests.tool_templates import HERMES_TEMPLATE

pytestmark = pytest.mark.integration

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 40},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}}}}}
ASK = [{"role": "system", "content": "You are a weather assistant."},
       {"role": "user", "content": "What is the weather in Paris, in celsius?"}]


@pytest.fixture(scope="module")
def vocab():
    """The model's tokenizer alone (no weights in memory): what the replica tokenizes with."""
    return Llama(model_path=str(resolve_weights(SMOLLM2_PATH, Path("/nonexistent"))), vocab_only=True, verbose=False)


@pytest.fixture
def oai(formats_server):
    return openai.OpenAI(base_url=formats_server.base_url + "/v1", api_key=KEY, max_retries=0)


def _prompt_tokens(vocab, messages: list[dict], tools: list[dict]) -> int:
    formatter = Jinja2ChatFormatter(template=HERMES_TEMPLATE, eos_token="<|im_end|>", bos_token="<|im_start|>")
    prompt = formatter(messages=messages, tools=tools).prompt
    return len(vocab.tokenize(prompt.encode(), add_bos=False, special=True))


def _valid(call) -> dict:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    return arguments


def test_required_calls_validate_and_the_prompt_holds_the_tools(oai, vocab):
    r = oai.chat.completions.create(model=HERMES, messages=ASK, tools=[WEATHER], tool_choice="required",
                                    max_tokens=120, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
    _valid(choice.message.tool_calls[0])
    # the template's tools block, exactly: the count of the prompt rendered here with the tools
    assert r.usage.prompt_tokens == _prompt_tokens(vocab, ASK, [WEATHER])
    assert r.usage.prompt_tokens > _prompt_tokens(vocab, ASK, []) + 60


def test_streamed_calls_join_to_the_whole_answer(oai):
    kwargs = dict(model=HERMES, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=120,
                  temperature=0, parallel_tool_calls=False)
    whole = oai.chat.completions.create(**kwargs).choices[0].message.tool_calls
    chunks = [c for c in oai.chat.completions.create(stream=True, **kwargs) if c.choices]
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    first, fragments = deltas[0], deltas[1:]
    assert (first.index, first.function.name, first.function.arguments) == (0, "get_weather", "")
    assert first.id.startswith("call_") and all(d.id is None for d in fragments)
    assert "".join(d.function.arguments for d in fragments) == whole[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks)


def test_the_sdk_tool_loop_goes_back_to_the_template_natively(oai, vocab):
    first = oai.chat.completions.create(model=HERMES, messages=ASK, tools=[WEATHER], tool_choice="required",
                                        max_tokens=120, temperature=0.7, seed=5)
    message = first.choices[0].message
    for call in message.tool_calls:
        _valid(call)
    results = [{"role": "tool", "tool_call_id": c.id, "content": "18 degrees, sunny"} for c in message.tool_calls]
    conversation = ASK + [message.model_dump(exclude_none=True)] + results
    second = oai.chat.completions.create(model=HERMES, messages=conversation, tools=[WEATHER], tool_choice="auto",
                                         max_tokens=40, temperature=0.7, seed=5)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    for call in second.choices[0].message.tool_calls or []:
        _valid(call)
    # the calls as <tool_call> blocks and the results as <tool_response>: the template's own rendering
    native = ASK + [{"role": "assistant", "content": "", "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                   "arguments": json.loads(c.function.arguments)}}
        for c in message.tool_calls]}] + results
    assert second.usage.prompt_tokens == _prompt_tokens(vocab, native, [WEATHER])


def test_api_v1_chat_streams_the_calls_in_its_done_event(formats_client):
    body = {"model": HERMES, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 120,
            "temperature": 0, "stream": True}
    with formats_client.stream("POST", "/api/v1/chat", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    done = events[-1]
    assert done["done"] and done["finish_reason"] == "tool_calls", done
    assert all(not e["response"] for e in events)
    call = done["tool_calls"][0]
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_auto_answers_in_text_or_calls_and_text_streams_as_content(oai):
    greeting = [{"role": "system", "content": "Greet the user. Use the tool only when asked about the weather."},
                {"role": "user", "content": "Hi there! How are you today?"}]
    texts = 0
    for seed in range(10):
        r = oai.chat.completions.create(model=HERMES, messages=greeting, tools=[WEATHER], tool_choice="auto",
                                        max_tokens=60, temperature=0.7, seed=seed)
        choice = r.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            _valid(choice.message.tool_calls[0])
        else:  # a text answer never opens with a call's tag
            assert choice.message.content and not choice.message.content.startswith("<"), choice
            texts += 1
    assert texts, "no text answer in 10 tries: the text branch was never taken"
    chunks = [c for c in oai.chat.completions.create(model=HERMES, messages=greeting, tools=[WEATHER],
                                                     tool_choice="auto", max_tokens=60, temperature=0.7, seed=seed,
                                                     stream=True) if c.choices]
    whole = oai.chat.completions.create(model=HERMES, messages=greeting, tools=[WEATHER], tool_choice="auto",
                                        max_tokens=60, temperature=0.7, seed=seed).choices[0].message
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == (whole.content or "") and bool(whole.tool_calls) == any(
        c.choices[0].delta.tool_calls for c in chunks)
