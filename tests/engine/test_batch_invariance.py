"""The seeded-answer tests on the serve app compare choices computed in different batches; they
hold only because llama.cpp computes SmolLM2's Q4_1 logits bit for bit the same one token or many
at a time (repacked types such as Q4_K do not: docs/structured-output.md, `seed`)."""

import llama_cpp
import numpy as np

from deployments.weights import resolve_weights
from tests.engine.conftest import SMOLLM2


def test_smollm2_logits_are_the_same_batched_or_one_token_at_a_time(tmp_path):
    model = llama_cpp.Llama(str(resolve_weights(SMOLLM2, tmp_path, None)), n_ctx=256, n_batch=64,
                            n_threads=2, logits_all=True, verbose=False)
    tokens = model.tokenize(b"The sea is a wonderful place and")
    model.eval(tokens)
    batched = np.array(model.scores[len(tokens) - 1])
    model.reset()
    for token in tokens:
        model.eval([token])
    assert np.array_equal(np.array(model.scores[len(tokens) - 1]), batched)
