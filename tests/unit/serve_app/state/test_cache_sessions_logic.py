from core.types import GenerationRequest, SamplingParams
from serve_app.state.cache import cache_key, wants_cache
from serve_app.state.sessions import trim_to_fit


def _req(**sampling):
    return GenerationRequest("r", SamplingParams(**sampling), prompt="Hello  \n")


def test_only_deterministic_requests_are_cached_by_default():
    assert wants_cache(_req(temperature=0), None, False)
    assert wants_cache(_req(temperature=0.7, seed=1), None, False)
    assert not wants_cache(_req(temperature=0.7), None, False)
    assert wants_cache(_req(temperature=0.7), True, False)
    assert not wants_cache(_req(temperature=0), False, False)
    assert not wants_cache(_req(temperature=0), None, True)


def test_cache_key_covers_tenant_endpoint_model_identity_and_sampling():
    base = dict(tenant="k1", endpoint="generate", model="m", identity="rev1")
    key = cache_key(_req(temperature=0), **base)
    assert key == cache_key(GenerationRequest("other-id", SamplingParams(temperature=0), prompt="Hello"), **base)
    for change in ({"tenant": "k2"}, {"endpoint": "chat"}, {"model": "n"}, {"identity": "rev2"}):
        assert cache_key(_req(temperature=0), **{**base, **change}) != key
    assert cache_key(_req(temperature=0, top_k=3), **base) != key


def test_trim_drops_oldest_turns_but_keeps_system_and_newest():
    msgs = [{"role": "system", "content": "s"}] + [{"role": "user", "content": str(i)} for i in range(5)]
    kept = [msgs[i] for i in trim_to_fit(msgs, [10, 50, 50, 50, 50, 50], budget=120)]
    assert kept[0]["role"] == "system" and [m["content"] for m in kept[1:]] == ["4"]  # a block: down to half the room
    assert [msgs[i] for i in trim_to_fit(msgs, [10, 50, 50, 50, 50, 500], budget=100)][-1]["content"] == "4"
    assert trim_to_fit(msgs, [10, 20, 20, 20, 20, 20], budget=110) == list(range(6))  # fits: all


def test_trim_drops_older_system_messages_only_when_the_turns_are_not_enough():
    msgs = [{"role": "system", "content": "a"}, {"role": "user", "content": "1"},
            {"role": "system", "content": "b"}, {"role": "user", "content": "2"}]

    def contents(budget):
        return [msgs[i]["content"] for i in trim_to_fit(msgs, [50, 10, 50, 10], budget=budget)]
    assert contents(120) == ["a", "1", "b", "2"]
    assert contents(110) == ["a", "b", "2"]
    assert contents(70) == ["b", "2"]


def test_a_cache_key_changes_with_the_grammar_and_logprobs_bypass_the_cache():
    base = dict(tenant="k1", endpoint="chat", model="m", identity="rev1")
    plain = cache_key(_req(temperature=0), **base)
    assert cache_key(_req(temperature=0, grammar="root ::= \"{}\""), **base) != plain
    assert cache_key(_req(temperature=0, logit_bias=((5, -100.0),)), **base) != plain
    assert wants_cache(_req(temperature=0), None, False)
    assert not wants_cache(_req(temperature=0, logprobs=2), None, False)
