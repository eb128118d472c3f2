"""The transformers (SafeTensors) backend through a real Serve app, on a tiny llama generated in the session."""

import time

import openai
import pytest

from tests.integration.conftest import KEY, TINY, TINY_4BIT
from tests.integration.sse import parse_sse


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


@pytest.fixture
def oai(formats_server):
    return openai.OpenAI(base_url=formats_server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", [TINY, TINY_4BIT])
def test_completion_counts_tokens_exactly(formats_client, tokenizer, model):
    prompt = "The weather today is"
    r = formats_client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 10,
                                                     "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length" and body["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == len(tokenizer(prompt).input_ids)
    assert body["usage"]["completion_tokens"] == 10


def test_chat_uses_the_tokenizer_chat_template(oai, tokenizer):
    messages = [{"role": "user", "content": "Say hello."}]
    r = oai.chat.completions.create(model=TINY, messages=messages, max_tokens=6, temperature=0,
                                    extra_body={"ignore_eos": True})
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert r.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)
    assert r.usage.completion_tokens == 6 and r.choices[0].message.content


def test_stream_equals_plain_greedy_answer(oai):
    args = dict(model=TINY, prompt="Once upon a time", max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    plain = oai.completions.create(**args).choices[0].text
    chunks = list(oai.completions.create(**args, stream=True))
    assert len(chunks) >= 3  # streamed piece by piece, not one blob
    assert "".join(c.choices[0].text for c in chunks) == plain


def test_api_v1_chat_stream(formats_client):
    r = formats_client.post("/api/v1/chat", json={"model": TINY, "messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 8, "ignore_eos": True, "stream": True})
    events = parse_sse(r.text)
    assert events[-1]["done"] is True and events[-1]["finish_reason"] == "length"
    assert "".join(e["response"] for e in events[:-1])


def test_stop_string_and_max_tokens(formats_client):
    sampled = {"model": TINY, "prompt": "Numbers:", "max_tokens": 12, "temperature": 1.0, "seed": 42,
               "ignore_eos": True}
    full = formats_client.post("/v1/completions", json=sampled).json()
    text = full["choices"][0]["text"]
    assert full["usage"]["completion_tokens"] == 12 and full["choices"][0]["finish_reason"] == "length"
    stop = text.split()[2]  # a word the model really produced (seeded sampling repeats exactly)
    cut = formats_client.post("/v1/completions", json={**sampled, "stop": stop}).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert stop not in cut["choices"][0]["text"] and text.startswith(cut["choices"][0]["text"])
    assert cut["usage"]["completion_tokens"] < 12


def test_context_overflow_is_400(formats_client):
    r = formats_client.post("/v1/completions", json={"model": TINY, "prompt": "word " * 2100, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def _figures(client):
    return next(m for m in client.get("/api/v1/models").json()["models"] if m["name"] == TINY)


def test_disconnect_stops_generate(formats_client):
    before = _figures(formats_client)["cancelled"]
    body = {"model": TINY, "prompt": "Go on:", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with formats_client.stream("POST", "/v1/completions", json=body) as r:
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received >= 3:
                break
    for _ in range(300):  # bounded wait for the replica to notice
        figures = _figures(formats_client)
        if figures["cancelled"] > before and figures["in_flight"] == 0:
            break
        time.sleep(0.2)
    assert figures["cancelled"] == before + 1 and figures["in_flight"] == 0
    ok = formats_client.post("/v1/completions", json={"model": TINY, "prompt": "Hi", "max_tokens": 2})
    assert ok.status_code == 200


def test_structured_output_is_refused_by_name_where_it_cannot_be_honoured(formats_client):
    """The transformers engine has no grammar sampler yet: JSON mode is a 400, never free text."""
    r = formats_client.post("/v1/chat/completions", json={
        "model": TINY, "messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format" and TINY in r.json()["error"]["message"]


def test_logprobs_are_refused_by_name_on_every_channel(formats_client):
    """Only the GGUF engine reports log probabilities: a 400 naming `logprobs` on /v1 and /api/v1
    (WebSocket and batch items take the same check in serving.py), never an answer without them."""
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
                       ("/api/v1/generate", {"prompt": "Hi"}), ("/api/v1/chat", {"messages": [{"role": "user", "content": "Hi"}]})):
        r = formats_client.post(path, json={"model": TINY, **body, "logprobs": True, "top_logprobs": 2, "max_tokens": 2})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["param"] == "logprobs" and TINY in r.json()["error"]["message"], r.text
    r = formats_client.post("/api/v1/generate/batch", json={"items": [
        {"id": "a", "model": TINY, "prompt": "Hi", "logprobs": True, "max_completion_tokens": 2}]})
    assert r.status_code == 200 and r.json()["results"][0]["error"]["param"] == "logprobs", r.text
