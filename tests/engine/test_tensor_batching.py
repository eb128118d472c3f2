"""Continuous batching of the transformers and ONNX text backends on the real SmolLM2-135M-Instruct
(the packaged GGUF converted once to SafeTensors and to ONNX in MODEL_CACHE_DIR), in-process.

Concurrent requests share decode steps (asserted from the step record) and each gets the text it
gets alone. Greedy answers are compared exactly: padding is masked out and positions are each
row's own, so a batch changes only the rounding of the matrix products (logits within ~1e-5 of
the answer alone), which could flip a choice only at a near-tie of the top two logits; none of
these prompts has one.
"""

import asyncio

import pytest

from core.types import GenerationRequest, SamplingParams
from deployments.backends import get_backend
from deployments.config import parse_models

TOPICS = ["a lighthouse keeper", "a lost cat", "the first snow", "a broken clock", "a market in Lisbon",
          "a robot gardener", "an old violin", "a night train", "a desert well", "a chess prodigy",
          "a beekeeper", "a paper boat", "a mountain rescue", "a quiet library", "a storm at sea", "a baker"]
KINDS = ("transformers", "onnx")


@pytest.fixture(scope="session")
def smollm2_paths():
    from scripts.convert_gguf_to_safetensors import cache_dir, convert, packaged_smollm2
    from scripts.convert_to_onnx import export

    safetensors = convert(packaged_smollm2(), cache_dir() / "smollm2-135m-instruct-safetensors")
    return {"transformers": safetensors, "onnx": export(safetensors, cache_dir() / "smollm2-135m-instruct-onnx")}


def load(kind: str, path, **engine):
    entry = {"type": kind, "path": str(path), "threads": 2, "device": "cpu", "context_length": 1024, **engine}
    backend = get_backend(kind)(kind, parse_models({"models": {kind: entry}}).models[kind], path)
    backend.load()
    return backend


@pytest.fixture(scope="module", params=KINDS)
def backend(request, smollm2_paths):
    loaded = load(request.param, smollm2_paths[request.param], parallel=16)
    yield loaded
    loaded.unload()


def chat(i: int, **sampling) -> GenerationRequest:
    s = SamplingParams(**{"max_tokens": 16, "temperature": 0, **sampling})
    return GenerationRequest(f"req-{i}", s, messages=({"role": "user", "content": f"Tell me about {TOPICS[i]}."},))


async def answer(backend, request) -> tuple[str, str, int]:
    text, last = "", None
    async for chunk in backend.stream(request):
        text += chunk.text
        last = chunk
    return text, last.finish_reason, last.usage.completion_tokens


def alone_and_together(backend, requests):
    alone = [asyncio.run(answer(backend, r)) for r in requests]
    since = backend.engine.log.stats.steps

    async def together():
        return await asyncio.gather(*(answer(backend, r) for r in requests))

    return alone, asyncio.run(together()), backend.engine.log.records(since)


def test_concurrent_greedy_requests_share_steps_and_equal_their_answers_alone(backend):
    requests = [chat(i) for i in range(16)]
    alone, together, records = alone_and_together(backend, requests)
    assert max(len(r["decode"]) for r in records) == 16  # one forward pass advanced all 16
    assert together == alone
    assert len({text for text, _, _ in alone}) == 16  # distinct answers, not one repeated


def test_sampling_stop_strings_and_max_tokens_hold_per_request_in_a_batch(backend):
    requests = [chat(i, max_tokens=4 + i, seed=100 + i, temperature=0.8 if i % 2 else 0, ignore_eos=True)
                for i in range(8)]
    alone = [asyncio.run(answer(backend, r)) for r in requests]
    assert [tokens for _, _, tokens in alone] == [4 + i for i in range(8)]
    # A stop string each request really produces: its word after the first one.
    stops = [text.split()[1] if len(text.split()) > 2 else "\n\n" for text, _, _ in alone]
    requests += [chat(i, max_tokens=4 + i, seed=100 + i, temperature=0.8 if i % 2 else 0, ignore_eos=True,
                      stop=(stops[i],)) for i in range(8)]
    alone, together, records = alone_and_together(backend, requests)
    assert max(len(r["decode"]) for r in records) >= 8
    assert together == alone  # seeded draws repeat inside a batch too
    for (full, _, _), (cut, reason, tokens) in zip(alone[:8], alone[8:]):
        if reason == "stop":
            assert full.startswith(cut) and len(cut) < len(full)


def test_cancelling_a_stream_frees_its_row_for_a_waiting_request(smollm2_paths):
    backend = load("onnx", smollm2_paths["onnx"], parallel=2, interactive_reserve=0)
    try:
        engine = backend.engine

        async def scenario():
            first = backend.stream(chat(0, max_tokens=500, ignore_eos=True))
            await first.__anext__()  # running
            kept = asyncio.ensure_future(answer(backend, chat(1, max_tokens=24, ignore_eos=True)))
            waiting = asyncio.ensure_future(answer(backend, chat(2, max_tokens=4, ignore_eos=True)))
            while not (engine.busy_slots == 2 and engine.waiting == 1):  # both rows taken: the third waits
                await asyncio.sleep(0.01)
            await first.aclose()  # the client leaves
            return await kept, await waiting

        since = engine.log.stats.steps
        kept, waited = asyncio.run(scenario())
        records = engine.log.records(since)
        assert kept[2] == 24 and waited[2] == 4 and backend.cancelled == 1
        gone = max(r["step"] for r in records if "req-0" in r["decode"])
        started = next(r["step"] for r in records if "req-2" in r["started"])
        assert started == gone + 1  # the freed row is taken at the very next step
        assert all(len(r["decode"]) <= 2 for r in records)
        assert engine.busy_slots == 0 and engine.waiting == 0
    finally:
        backend.unload()


def test_adapter_groups_take_turns_and_each_answer_equals_its_answer_alone(tmp_path):
    """Base model, alpha and beta requested together (a tiny llama and two random LoRAs made here):
    a decode step never mixes adapters, the groups take turns, and every answer is the one it gets alone."""
    from tests.tiny_models import tiny_llama, tiny_lora

    base = tiny_llama(tmp_path / "tiny")
    adapters = {name: tiny_lora(base, tmp_path / name, seed) for seed, name in enumerate(("alpha", "beta"))}
    backend = load("transformers", base, parallel=4, max_adapters=2)
    backend.adapter_paths = adapters
    try:
        requests = [GenerationRequest(f"req-{i}", SamplingParams(max_tokens=8, temperature=0, ignore_eos=True),
                                      prompt=f"Story {i}:", adapter=(None, "alpha", "beta")[i % 3]) for i in range(9)]
        alone, together, records = alone_and_together(backend, requests)
        assert together == alone
        assert len({alone[i][0] for i in range(3)}) == 3  # each adapter changes the answer
        adapter_of = {r.request_id: r.adapter for r in requests}
        decoding = [r for r in records if r["decode"]]
        for record in decoding:
            assert {adapter_of[rid] for rid in record["decode"]} == {record["adapter"]}  # one group a step
        # Groups take turns: one never decodes twice in a row while another has rows (started before, decodes after).
        span = {}
        for record in records:
            for rid in [*record["started"], *record["decode"]]:
                low, high = span.get(adapter_of[rid], (record["step"], record["step"]))
                span[adapter_of[rid]] = (min(low, record["step"]), max(high, record["step"]))
        for before, after in zip(decoding, decoding[1:]):
            if before["adapter"] == after["adapter"]:
                assert not [a for a, (low, high) in span.items()
                            if a != before["adapter"] and low <= before["step"] and high > after["step"]]
        assert {r["adapter"] for r in decoding} == {None, "alpha", "beta"}
    finally:
        backend.unload()
