"""The official `openai` package, pointed at /v1, works unchanged."""

import openai
import pytest

from tests.integration.conftest import ALL_MODELS, DEFAULT, GEMMA, KEY


@pytest.fixture
def oai(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


def test_list_models(oai):
    assert {m.id for m in oai.models.list()} == ALL_MODELS
    assert oai.models.retrieve(GEMMA).id == GEMMA


def test_chat_completion(oai):
    r = oai.chat.completions.create(
        model=DEFAULT, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    assert r.object == "chat.completion" and r.model == DEFAULT
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_usage(oai):
    stream = oai.chat.completions.create(
        model=DEFAULT, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12


def test_completion_plain_and_stream(oai):
    r = oai.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text.strip() and r.usage.completion_tokens > 0
    parts = [c.choices[0].text for c in oai.completions.create(
        model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)]
    assert "".join(parts) == r.choices[0].text  # greedy: streamed text equals the plain answer


def test_model_omitted_means_default(base_url):
    import httpx

    r = httpx.post(base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}, timeout=120)
    assert r.status_code == 200 and r.json()["model"] == DEFAULT


def test_errors_surface_as_openai_exceptions(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=DEFAULT, messages=[{"role": "user", "content": "x"}], temperature=-1)
    bad = openai.OpenAI(base_url=oai.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def _n_chat(oai, n: int, seed: int, extra_body=None, **extra):
    return oai.chat.completions.create(
        model=DEFAULT, messages=[{"role": "user", "content": "Write a short sentence about the sea."}],
        max_tokens=8, temperature=1.0, seed=seed, n=n, extra_body={"ignore_eos": True, **(extra_body or {})}, **extra)


def test_n_choices_are_the_seeded_answers_of_single_requests(oai):
    """n=3 with seed s: choice i is what n=1 with seed s+i answers; the prompt counts once."""
    three = _n_chat(oai, 3, seed=40)
    assert [c.index for c in three.choices] == [0, 1, 2]
    alone = [_n_chat(oai, 1, seed=40 + i) for i in range(3)]
    assert [c.message.content for c in three.choices] == [a.choices[0].message.content for a in alone]
    assert len({c.message.content for c in three.choices}) > 1  # sampled with different seeds
    assert all(c.finish_reason == "length" for c in three.choices)
    assert three.usage.prompt_tokens == alone[0].usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * 8


def test_n_choices_stream_interleaved_by_index(oai):
    plain = _n_chat(oai, 2, seed=7)
    chunks = list(_n_chat(oai, 2, seed=7, stream=True, stream_options={"include_usage": True}))
    texts, finishes = {0: "", 1: ""}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: plain.choices[0].message.content, 1: plain.choices[1].message.content}
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices


def test_n_completions_plain_and_streamed(oai):
    """Streamed choices reassemble into the plain ones. On SmolLM2's Q4_1 weights, whose logits
    llama.cpp computes bit for bit the same in any batch: Gemma's Q4_K_M ones are repacked and
    round differently when the two choices share a step (docs/structured-output.md, `seed`)."""
    body = dict(model=DEFAULT, prompt="The sea is", max_tokens=6, temperature=0.9, seed=3, n=2,
                extra_body={"ignore_eos": True})
    plain = oai.completions.create(**body)
    assert [c.index for c in plain.choices] == [0, 1] and plain.usage.completion_tokens == 12
    streamed = {0: "", 1: ""}
    for chunk in oai.completions.create(**body, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == {0: plain.choices[0].text, 1: plain.choices[1].text}


def test_n_with_a_session_is_refused_by_name(oai):
    with pytest.raises(openai.BadRequestError) as info:
        _n_chat(oai, 2, seed=1, extra_body={"session_id": "n-test"})
    assert info.value.body["param"] == "n"
