"""Conversations' KV saved to host memory and restored (deployments/engine/saved_prompts.py), on the real
SmolLM2 GGUF with two slots and three chats: a chat whose slot went to another chat gets its history back
from host memory, prefills only its new turn, and answers exactly as the same request computed whole."""

import asyncio

import pytest

from core.types import GenerationRequest, SamplingParams
from tests.engine.conftest import _fixture

SYSTEM = ("You are the help desk of a small bicycle shop in a quiet town. Answer in one short sentence, "
          "politely, without lists. The shop opens at nine and closes at six, from Monday to Saturday. "
          "It repairs city bikes, road bikes and children's bikes, sells helmets, locks, lights and tyres, "
          "and rents two cargo bikes by the day. Payment is by card or cash. There is no parking, but the "
          "tram stops at the door. Do not promise prices: say that the workshop gives a quote first.")

two_slots = _fixture(parallel=2, interactive_reserve=0)
one_entry = _fixture(parallel=1, interactive_reserve=0, saved_prompt_budget="7MB")


def turn(messages: list[dict], rid: str, scope: str = "key-a", conversation=None) -> GenerationRequest:
    return GenerationRequest(request_id=rid, messages=tuple(messages), cache_scope=scope,
                             conversation=conversation, sampling=SamplingParams(max_tokens=16, temperature=0))


async def answer(backend, request: GenerationRequest) -> str:
    return "".join([chunk.text async for chunk in backend.stream(request)])


def prefilled(backend, rid: str) -> int:
    return sum(r["prefill"].get(rid, 0) for r in backend.engine.log.records())


def chat(name: str) -> list[dict]:
    """A first turn whose own part (after the shared system prompt) is long enough to be worth saving."""
    question = (f"Hello, I am {name}. My bike is an old {name} Special with a steel frame, a squeaking chain, "
                f"a slow rear puncture and brakes that {name}'s father adjusted years ago. I ride it to work "
                f"every day along the river, about twelve kilometres each way. When do you open, and can "
                f"{name} bring it in before work?")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_a_chat_whose_slot_was_taken_is_restored_and_answers_as_if_computed_whole(two_slots):
    stats = two_slots.engine.saved.stats
    chats = {name: chat(name) for name in ("Ada", "Bob", "Cyd")}
    for name, messages in chats.items():  # three chats, two slots: Cyd's turn takes Ada's slot
        messages.append({"role": "assistant", "content": asyncio.run(answer(
            two_slots, turn(messages, f"one-{name}", conversation=f"k/{name}")))})
    assert stats.saved >= 1  # Ada's history went to host memory before Cyd's prompt overwrote it
    ada = chats["Ada"] + [{"role": "user", "content": "Can I rent a cargo bike on Sunday?"}]
    restored_before, reused_before = stats.restored, stats.restored_tokens

    restored = asyncio.run(answer(two_slots, turn(ada, "two-Ada", conversation="k/Ada")))
    assert stats.restored == restored_before + 1
    kept = stats.restored_tokens - reused_before
    whole = len(two_slots._prompt(turn(ada, "count"))[0])
    assert kept > len(whole_history_tokens(two_slots, chats["Ada"])) // 2
    assert prefilled(two_slots, "two-Ada") == whole - kept  # only the new turn was computed

    alone = asyncio.run(answer(two_slots, turn(ada, "two-Ada-alone", scope="key-fresh")))
    assert prefilled(two_slots, "two-Ada-alone") == whole  # another scope reuses nothing saved
    assert restored == alone


def whole_history_tokens(backend, messages: list[dict]) -> list[int]:
    return backend._prompt(turn(messages, "count"))[0]


def test_another_keys_chat_never_restores_a_saved_conversation(two_slots):
    stats = two_slots.engine.saved.stats
    for name in ("Dan", "Eve", "Fay"):
        asyncio.run(answer(two_slots, turn(chat(name), f"scoped-{name}", scope="key-b")))
    restored = stats.restored
    asyncio.run(answer(two_slots, turn(chat("Dan"), "scoped-Dan-c", scope="key-c")))
    assert stats.restored == restored
    assert prefilled(two_slots, "scoped-Dan-c") == len(whole_history_tokens(two_slots, chat("Dan")))


def test_forgetting_a_session_drops_its_saved_kv(two_slots):
    engine = two_slots.engine
    for name in ("Gus", "Hal", "Ivy"):
        asyncio.run(answer(two_slots, turn(chat(name), f"forget-{name}", scope="key-d", conversation=f"d/{name}")))
    held = [e for e in engine.saved._entries.values() if e.conversation == "d/Gus"]
    assert held, "Gus's history was not saved when Ivy took his slot"
    assert two_slots.forget_conversation("d/Gus") >= 1
    assert not [e for e in engine.saved._entries.values() if e.conversation == "d/Gus"]
    restored = engine.saved.stats.restored
    asyncio.run(answer(two_slots, turn(chat("Gus") + [{"role": "assistant", "content": "Nine."},
                                                      {"role": "user", "content": "Thanks."}], "forget-Gus-2",
                                       scope="key-d", conversation="d/Gus")))
    assert engine.saved.stats.restored == restored


@pytest.mark.parametrize("names", [("Jo", "Kai", "Lu")])
def test_the_budget_holds_by_evicting_the_least_recently_used(one_entry, names):
    stats = one_entry.engine.saved.stats
    for name in names:  # one slot: each chat pushes the previous one to host memory
        asyncio.run(answer(one_entry, turn(chat(name), f"budget-{name}")))
    assert stats.saved >= 2 and stats.evicted >= 1
    assert 0 < stats.bytes <= 7_000_000 and stats.entries == 1


def test_a_burst_of_new_chats_computes_their_shared_system_prompt_once(smollm2):
    """Eight chats with one system prompt start together on empty-for-them slots: one computes the
    system prompt, the others copy it from its slot. Batching alone (no copy) already flips a near-tie
    in some of these answers against the same request sent alone (2 of 8 here with copying turned
    off, as llama-server's own batches do: scripts/bench_bot.py counts them), so the answers are held
    to that: at most two differ."""
    stats, log = smollm2.engine.saved.stats, smollm2.engine.log.stats
    chats = {name: chat(name) for name in ("Mo", "Ned", "Oz", "Pia", "Quin", "Rae", "Sol", "Tam")}
    alone = {name: asyncio.run(answer(smollm2, turn(m, f"burst-alone-{name}", scope=f"alone-{name}")))
             for name, m in chats.items()}
    copied, prefilled_before = stats.copied, log.prefill_tokens

    async def burst():
        return await asyncio.gather(*(answer(smollm2, turn(m, f"burst-{name}", scope="key-burst"))
                                      for name, m in chats.items()))

    together = dict(zip(chats, asyncio.run(burst())))
    assert stats.copied - copied >= 4
    whole = sum(len(whole_history_tokens(smollm2, m)) for m in chats.values())
    system = len(whole_history_tokens(smollm2, chats["Mo"])) - 60  # the shared part, roughly: the prompt less a turn
    assert log.prefill_tokens - prefilled_before < whole - 4 * system
    assert sum(together[name] == alone[name] for name in chats) >= len(chats) - 2, (together, alone)
