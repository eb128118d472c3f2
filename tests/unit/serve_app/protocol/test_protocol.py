import pytest
from pydantic import ValidationError

from deployments.engine.text import StopMatcher
from serve_app.protocol.api_v1 import ChatRequest, GenerateRequest
from serve_app.protocol.openai import ChatCompletionRequest, CompletionRequest


def test_api_v1_request_maps_to_sampling_params():
    params = GenerateRequest(prompt="hi", max_tokens=5, temperature=0, stop="END", seed=7).to_sampling_params()
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (5, 0, ("END",), 7)


def test_api_v1_refuses_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="hi", colour="red")
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="hi", temperature=-1)
    with pytest.raises(ValidationError):
        ChatRequest(messages=[])


def test_openai_defaults_and_extensions():
    req = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], user="someone", max_completion_tokens=9)
    params = req.to_sampling_params()
    assert (params.temperature, params.top_p, params.top_k, params.repeat_penalty) == (1.0, 1.0, 0, 1.0)
    assert params.max_tokens == 9


def test_openai_content_parts_and_developer_role():
    req = ChatCompletionRequest(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ])
    assert [m.as_dict() for m in req.messages] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


def test_openai_choices_bounded_and_single_prompt():
    assert ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], n=8).n == 8
    for n in (0, 9):
        with pytest.raises(ValidationError):
            ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], n=n)
    assert CompletionRequest(prompt=["only"]).prompt == "only"
    with pytest.raises(ValidationError):
        CompletionRequest(prompt=["a", "b"])


def test_stop_matcher_holds_back_partial_stop():
    m = StopMatcher(["STOP"])
    assert m.feed("hello ST") == ("hello ", False)
    assert m.feed("ORM") == ("STORM", False)
    assert m.feed(" and ST") == (" and ", False)
    assert m.feed("OP there") == ("", True)


def test_stop_matcher_flushes_unfinished_prefix():
    m = StopMatcher(["</end>"])
    assert m.feed("done </e") == ("done ", False)
    assert m.flush() == "</e"


def test_token_text_waits_out_partial_characters_and_stop_prefixes():
    from deployments.engine.text import TokenText

    # a fake whole-sequence decoder: ids -> the text so far ("\ufffd" while a character is split)
    decoded = {1: "Hel", 2: "Hello \ufffd", 3: "Hello wo", 4: "Hello world END tail"}
    out = TokenText(lambda ids: decoded[len(ids)], ["END"])
    assert out.push(1) == "Hel"
    assert out.push(2) == ""  # split character: nothing yet
    assert out.push(3) == "lo wo"
    assert out.push(4) == "rld " and out.stopped
    assert out.finish() == "" and len(out.produced) == 4
