"""The batching engine on the real SmolLM2 GGUF, in this process (no Ray): outputs and the step record.

Through Serve the same engine is tested in tests/integration/test_batching.py; here the engine's
step record is read directly, so ordering is asserted from what the engine did, not from timing.
"""

import asyncio
import time

import pytest

from core.errors import Overloaded
from core.types import GenerationRequest, SamplingParams

PROMPTS = [f"Write one sentence about the number {n} and the colour {c}."
           for n, c in zip(range(16), ["red", "blue", "green", "gold"] * 4)]


def request(prompt: str, rid: str, priority: str = "interactive", **sampling) -> GenerationRequest:
    params = {"max_tokens": 24, "temperature": 0, **sampling}
    return GenerationRequest(request_id=rid, sampling=SamplingParams(**params),
                             messages=({"role": "user", "content": prompt},), priority=priority)


async def run(backend, req: GenerationRequest) -> tuple[str, object]:
    text, final = "", None
    async for chunk in backend.stream(req):
        text += chunk.text
        if chunk.finish_reason:
            final = chunk
    return text, final


def wait_until(condition, limit_s: float = 60) -> bool:
    """The engine applies a cancellation at its next step, on its own thread: wait for it."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def steps(backend) -> list[dict]:
    return backend.engine.log.records()


def step_of(records, rid: str, key: str) -> list[int]:
    return [r["step"] for r in records if rid in r[key]]


def test_sixteen_concurrent_greedy_streams_equal_each_request_alone(smollm2):
    """Batched arithmetic could in principle flip a near-tie between two tokens; SmolLM2 at Q4_1 on
    llama.cpp's CPU kernels gives the same greedy tokens here, so the test asks for exact equality."""
    alone = [asyncio.run(run(smollm2, request(p, f"alone-{i}")))[0] for i, p in enumerate(PROMPTS)]

    async def together():
        return await asyncio.gather(*(run(smollm2, request(p, f"batch-{i}")) for i, p in enumerate(PROMPTS)))

    batched = [text for text, _ in asyncio.run(together())]
    assert batched == alone
    records = steps(smollm2)
    widest = max(len(r["decode"]) for r in records)
    assert widest >= 8, f"at most {widest} sequences ever decoded in one step: no batching happened"


def test_seeded_sampling_reproduces_inside_a_batch(smollm2):
    seeded = dict(temperature=0.9, seed=1234, max_tokens=20)
    alone, _ = asyncio.run(run(smollm2, request(PROMPTS[0], "seed-alone", **seeded)))

    async def together():
        others = [run(smollm2, request(p, f"seed-other-{i}", temperature=0.9, max_tokens=20))
                  for i, p in enumerate(PROMPTS[1:8])]
        return await asyncio.gather(run(smollm2, request(PROMPTS[0], "seed-batch", **seeded)), *others)

    batched = asyncio.run(together())[0][0]
    assert batched == alone and alone


def test_stop_strings_and_max_tokens_hold_per_sequence(smollm2):
    reference, _ = asyncio.run(run(smollm2, request(PROMPTS[3], "ref", max_tokens=24)))
    words = reference.split()
    assert len(words) >= 4, reference
    stop = words[2]

    async def together():
        return await asyncio.gather(
            run(smollm2, request(PROMPTS[3], "stopped", max_tokens=24, stop=(stop,))),
            run(smollm2, request(PROMPTS[4], "short", max_tokens=5)),
            run(smollm2, request(PROMPTS[5], "long", max_tokens=24, ignore_eos=True)),
        )

    (stopped, f1), (short, f2), (long, f3) = asyncio.run(together())
    assert stopped == reference[:reference.index(stop)] and f1.finish_reason == "stop"
    assert f2.finish_reason == "length" and f2.usage.completion_tokens == 5
    assert f3.finish_reason == "length" and f3.usage.completion_tokens == 24


def test_a_cancelled_stream_frees_its_slot_for_the_next_step(smollm2_small):
    backend = smollm2_small  # two slots, no interactive reserve

    async def scenario():
        long = dict(max_tokens=200, ignore_eos=True)
        streams = [backend.stream(request(PROMPTS[i], f"hold-{i}", **long)) for i in range(2)]
        for s in streams:
            await s.__anext__()  # both slots decode
        waiter = asyncio.ensure_future(run(backend, request(PROMPTS[2], "waiter", max_tokens=4)))
        while backend.engine.room.lengths()["interactive"] == 0:
            await asyncio.sleep(0.01)
        await streams[0].aclose()  # the client of hold-0 goes away
        text, final = await waiter
        await streams[1].aclose()
        return final

    final = asyncio.run(scenario())
    assert final.finish_reason in ("stop", "length")
    records = steps(backend)
    last_cancelled = max(step_of(records, "hold-0", "decode"))
    started = step_of(records, "waiter", "started")
    assert started == [last_cancelled + 1]
    assert wait_until(lambda: backend.engine.busy_slots == 0), "hold-1's slot was never freed"


def test_a_long_prompt_is_prefilled_in_chunks_while_running_streams_advance_every_step(smollm2_chunked):
    backend = smollm2_chunked  # batch_tokens 32
    long_prompt = " ".join(f"item {i} is {'odd' if i % 2 else 'even'};" for i in range(60))

    async def scenario():
        running = [asyncio.ensure_future(run(backend, request(PROMPTS[i], f"run-{i}", max_tokens=60,
                                                              ignore_eos=True))) for i in range(2)]
        while len(step_of(steps(backend), "run-1", "decode")) < 2:
            await asyncio.sleep(0.01)
        await run(backend, request(long_prompt, "long", max_tokens=2))
        await asyncio.gather(*running)

    asyncio.run(scenario())
    records = steps(backend)
    prefill_steps = step_of(records, "long", "prefill")
    assert len(prefill_steps) >= 4, "the long prompt should take several steps at 32 tokens a step"
    by_step = {r["step"]: r for r in records}
    for step in prefill_steps:
        record = by_step[step]
        assert record["prefill"]["long"] + len(record["decode"]) <= 32
        for rid in ("run-0", "run-1"):  # both still running then: each fed its token at this step
            assert record["decode"].get(rid) == 1, (step, record)


def test_a_long_prompt_alone_is_decoded_chunk_by_chunk(smollm2_chunked):
    """A step of prompt chunks that want no logits is decoded too (it once was skipped, leaving the
    KV cache behind the slot's tokens: llama_decode returned -1 at the next chunk). The answer is
    not compared with a one-chunk prefill: matrix kernels of other batch sizes may flip a near-tie."""
    long_prompt = " ".join(f"box {i} holds {i * 3} apples;" for i in range(50))  # no slot has it cached
    text, final = asyncio.run(run(smollm2_chunked, request(long_prompt, "alone", max_tokens=8)))  # 32 a step
    prefill = [r for r in steps(smollm2_chunked) if "alone" in r["prefill"]]
    assert len(prefill) >= 4 and all(not r["decode"] for r in prefill)  # nothing else ran beside it
    assert all(r["seconds"] > 0 for r in prefill)  # llama_decode ran at every step
    assert final.finish_reason == "length" and final.usage.completion_tokens == 8 and text.strip()


def test_batch_priority_yields_to_interactive_and_leaves_the_reserve(smollm2_reserved):
    backend = smollm2_reserved  # four slots, one reserved for interactive requests
    engine = backend.engine

    async def scenario():
        batch = [asyncio.ensure_future(run(backend, request(PROMPTS[i], f"batch-{i}", "batch", max_tokens=80,
                                                            ignore_eos=True))) for i in range(5)]
        while engine.busy_slots < 3 or len(engine.room) < 2:
            await asyncio.sleep(0.01)
        at_submit = engine.log.stats.steps
        telegram = asyncio.ensure_future(run(backend, request(PROMPTS[9], "telegram", max_tokens=4)))
        await telegram
        await asyncio.gather(*batch)
        return at_submit

    at_submit = asyncio.run(scenario())
    records = steps(backend)
    started = {rid: step_of(records, rid, "started")[0] for rid in ["telegram"] + [f"batch-{i}" for i in range(5)]}
    last_two_batch = sorted(started[f"batch-{i}"] for i in range(5))[-2:]
    assert all(step > started["telegram"] for step in last_two_batch), started  # they waited longer
    assert started["telegram"] <= at_submit + 1, "the interactive request must start at the next step"
    for record in records:  # batch work never held all four slots
        running_batch = {rid for rid in record["decode"] if rid.startswith("batch-")}
        running_batch |= {rid for rid in record["prefill"] if rid.startswith("batch-")}
        assert len(running_batch) <= 3


def test_a_full_queue_refuses_at_once_and_every_admitted_request_completes(smollm2_tiny_queue):
    backend = smollm2_tiny_queue  # one slot, one waiting place

    async def scenario():
        first = backend.stream(request(PROMPTS[0], "q-first", max_tokens=30, ignore_eos=True))
        await first.__anext__()
        second = asyncio.ensure_future(run(backend, request(PROMPTS[1], "q-second", max_tokens=4)))
        while len(backend.engine.room) == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await run(backend, request(PROMPTS[2], "q-third", max_tokens=4))
        rest = [chunk async for chunk in first]
        return refused.value, rest[-1], await second

    refused, first_final, (_, second_final) = asyncio.run(scenario())
    assert refused.status == 503 and refused.retry_after_s >= 1
    assert first_final.finish_reason == "length" and first_final.usage.completion_tokens == 30
    assert second_final.finish_reason in ("stop", "length")
    assert backend.engine_report()["refused"]["interactive"] == 1


def test_prefix_reuse_prefills_only_the_new_part_of_a_conversation(smollm2):
    history = [{"role": "user", "content": "Name a fruit."}]
    first, _ = asyncio.run(run(smollm2, GenerationRequest(
        request_id="turn-1", sampling=SamplingParams(max_tokens=12, temperature=0), messages=tuple(history))))
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "And a vegetable?"}]
    before = smollm2.engine.log.stats.prefix_reused_tokens
    asyncio.run(run(smollm2, GenerationRequest(
        request_id="turn-2", sampling=SamplingParams(max_tokens=12, temperature=0), messages=tuple(history))))
    reused = smollm2.engine.log.stats.prefix_reused_tokens - before
    records = steps(smollm2)
    prefilled = sum(r["prefill"].get("turn-2", 0) for r in records)
    assert reused >= 10, reused  # the first turn's prompt (and answer) were in the slot
    assert prefilled + reused == len(smollm2._prompt(GenerationRequest(
        request_id="x", sampling=SamplingParams(), messages=tuple(history)))[0])


def test_a_cached_prefix_is_reused_only_within_its_cache_scope(smollm2):
    """Another key's request with the same prompt prefills it all (no cross-tenant timing channel);
    the same key's reuses it; the answers are the same either way (temperature 0)."""
    prompt = "The three primary colours of light are red, green and blue. Name one secondary colour:"

    def turn(rid: str, scope: str) -> GenerationRequest:
        return GenerationRequest(request_id=rid, prompt=prompt, cache_scope=scope,
                                 sampling=SamplingParams(max_tokens=6, temperature=0))

    first, _ = asyncio.run(run(smollm2, turn("scope-a-1", "key-a")))
    before = smollm2.engine.log.stats.prefix_reused_tokens
    other, _ = asyncio.run(run(smollm2, turn("scope-b-1", "key-b")))
    assert smollm2.engine.log.stats.prefix_reused_tokens == before  # key-b reused nothing of key-a's
    again, _ = asyncio.run(run(smollm2, turn("scope-a-2", "key-a")))
    assert smollm2.engine.log.stats.prefix_reused_tokens - before >= 10
    assert first == other == again

def test_ignore_eos_never_samples_an_end_token(smollm2):
    """SmolLM2 ends this plain completion at once (greedy); with ignore_eos the end token is banned
    (llama.cpp's server does the same), so the one token asked for is text, not an empty end token."""
    prompt = "105 Write a short story about a lighthouse keeper."

    def completion(rid: str, **sampling) -> GenerationRequest:
        return GenerationRequest(request_id=rid, prompt=prompt,
                                 sampling=SamplingParams(max_tokens=1, temperature=0, **sampling))

    text, final = asyncio.run(run(smollm2, completion("ends")))
    assert (text, final.finish_reason, final.usage.completion_tokens) == ("", "stop", 0)
    text, final = asyncio.run(run(smollm2, completion("goes-on", ignore_eos=True)))
    assert final.finish_reason == "length" and final.usage.completion_tokens == 1
    assert text != "", "the one token was an end token (empty text)"
