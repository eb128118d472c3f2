"""The numpy sampler the ONNX backend uses, and the shared token budget."""

import numpy as np
import pytest

from core.errors import ContextLengthExceeded
from core.types import SamplingParams
from deployments.engine.logits_sampling import choose
from deployments.engine.text import token_budget

LOGITS = np.array([0.0, 3.0, 2.9, -1.0, 1.0])


def test_greedy_takes_argmax_and_bans_tokens():
    rng = np.random.default_rng(0)
    assert choose(LOGITS, [], [], SamplingParams(temperature=0, repeat_penalty=1.0), rng) == 1
    assert choose(LOGITS, [], [], SamplingParams(temperature=0, repeat_penalty=1.0), rng, banned=(1,)) == 2


def test_logit_bias_moves_the_choice():
    rng = np.random.default_rng(0)
    base = dict(temperature=0, repeat_penalty=1.0)
    assert choose(LOGITS, [], [], SamplingParams(**base, logit_bias=((1, -100.0),)), rng) == 2
    assert choose(LOGITS, [], [], SamplingParams(**base, logit_bias=((3, 5.0),)), rng) == 3


def test_top_k_limits_choices_and_seed_repeats():
    params = SamplingParams(temperature=5.0, top_k=2, top_p=1.0, repeat_penalty=1.0)
    draws = [choose(LOGITS, [], [], params, np.random.default_rng(seed)) for seed in range(200)]
    assert set(draws) == {1, 2}
    again = [choose(LOGITS, [], [], params, np.random.default_rng(seed)) for seed in range(200)]
    assert draws == again


def test_top_p_keeps_the_smallest_nucleus():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=0.1, repeat_penalty=1.0)
    assert {choose(LOGITS, [], [], params, np.random.default_rng(s)) for s in range(100)} == {1}


def test_penalties_move_greedy_choice():
    greedy = SamplingParams(temperature=0, repeat_penalty=1.0)
    assert choose(LOGITS, [1], [1], SamplingParams(temperature=0, repeat_penalty=2.0), None) == 2
    assert choose(LOGITS, [1], [1], SamplingParams(temperature=0, repeat_penalty=1.0, presence_penalty=0.5), None) == 2
    assert choose(LOGITS, [1], [1], greedy, None) == 1
    assert LOGITS[1] == 3.0  # the caller's logits are not modified


def test_token_budget():
    default = SamplingParams(max_tokens=512, fit_max_tokens=True)  # the model's default: cut to the room
    assert token_budget("m", 100, 10, default, "prompt") == 90
    assert token_budget("m", 100, 10, SamplingParams(max_tokens=20, fit_max_tokens=True), "prompt") == 20
    assert token_budget("m", 100, 10, SamplingParams(max_tokens=90), "prompt") == 90
    assert token_budget("m", 100, 10, SamplingParams(), "prompt") == 90  # unresolved: up to the context's end
    with pytest.raises(ContextLengthExceeded):  # an asked number that does not fit is refused
        token_budget("m", 100, 10, SamplingParams(max_tokens=91), "prompt")
    with pytest.raises(ContextLengthExceeded):
        token_budget("m", 100, 100, default, "prompt")
