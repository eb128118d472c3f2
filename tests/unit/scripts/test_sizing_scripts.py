"""The sizing tools: random llamas have exactly the tensors transformers expects, and the vCPU
estimate scales the measured run by the measured thread ratio."""

import pytest

from scripts.bench_sizing import estimate
from scripts.make_random_gguf import SHAPES, llama_config, tensors

VOCAB = 49152


@pytest.mark.parametrize("size", sorted(SHAPES))
def test_random_llama_tensors_match_transformers(size):
    import torch
    from transformers import LlamaForCausalLM

    shape = SHAPES[size]
    with torch.device("meta"):  # shapes only: no memory for the weights
        model = LlamaForCausalLM(llama_config(shape, VOCAB))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if shape.tied:
        expected.pop("lm_head.weight")  # saved once, as the embedding
    written = {name: dims for name, dims, _ in tensors(shape, VOCAB)}
    assert written == expected
    assert shape.params(VOCAB) == sum(p.numel() for p in model.parameters())


def _run(prefill, decode, ttft, p50_16):
    return {"model": "m", "label": "m", "threads": 2, "prefill_tok_s": prefill,
            "standard": {"ttft_s": ttft, "decode_tok_s": decode, "completion_tokens": 201},
            "concurrent": [{"n": 16, "p50_total_s": p50_16, "p50_ttft_s": ttft * 4}]}


def test_estimate_scales_by_the_measured_thread_ratio():
    two = _run(prefill=200.0, decode=50.0, ttft=1.0, p50_16=40.0)
    one = _run(prefill=100.0, decode=40.0, ttft=2.0, p50_16=80.0)  # prefill x2.0, decode x1.25 from 1 to 2 threads
    (four,) = estimate([two], [one], 4)
    assert four["optimistic"]["ttft_s"] == pytest.approx(0.5)
    assert four["optimistic"]["decode_tok_s"] == pytest.approx(62.5)
    assert four["optimistic"]["total_s"] == pytest.approx(0.5 + 200 / 62.5)
    assert four["optimistic"]["p50_total_16_s"] == pytest.approx(20.0)
    assert four["conservative"]["ttft_s"] == pytest.approx(1.0 / 1.5)  # half the gain: x1.5
    assert four["conservative"]["decode_tok_s"] == pytest.approx(50.0 * 1.125)
    (eight,) = estimate([two], [one], 8)
    assert eight["optimistic"]["p50_ttft_16_s"] == pytest.approx(4.0 / 4)
    assert eight["conservative"]["p50_total_16_s"] == pytest.approx(40.0 / 1.5 ** 2)
