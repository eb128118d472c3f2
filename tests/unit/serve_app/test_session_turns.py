"""Session turns: block trimming, token counts learned from usage, the turn's lease, the save that
never loses a turn, and the service's session path (no call to the model before the turn, the
lifecycle gate once). Stand-in replica here; the real app and SmolLM2 in
tests/integration/test_cache_sessions.py."""

import asyncio
import json

import pytest

from core.errors import SessionBusy
from core.settings import Settings
from core.types import GenerationResult, SamplingParams, Usage
from deployments.config import load_models_file
from serve_app.model_router import ModelEntry, ModelRouter
from serve_app.ops.conversations import forget_conversation
from serve_app.serving import GenerationService, RequestOptions
from serve_app.state.session_trim import attribute, block_window, trim_to_fit
from serve_app.state.sessions import SessionStore
from serve_app.state.store import MemoryStore
from tests.conftest import ROOT
from tests.unit.admissions import admission
from tests.unit.in_process import FakeReplica, router_over
from tests.unit.stores import store_params

MODEL = "smollm2-135m-instruct"
OWNER = "unit-key"  # tests.unit.admissions.ANYONE


def _msg(role, content):
    return {"role": role, "content": content}


@pytest.fixture(params=list(store_params()))
def store(request):
    return request.param()


def test_a_block_trim_keeps_the_sent_prefix_for_several_turns():
    system, budget = _msg("system", "s"), 400
    messages, counts = [system], [50]
    cuts, sent_before = 0, None
    for turn in range(40):
        messages, counts = messages + [_msg("user", f"q{turn}")], counts + [20]
        kept = trim_to_fit(messages, counts, budget)
        sent = [messages[i] for i in kept]
        assert sum(counts[i] for i in kept) <= budget and sent[0] == system and sent[1]["role"] == "user"
        if sent_before is not None and sent[:len(sent_before)] != sent_before:
            cuts += 1
        messages, counts = sent + [_msg("assistant", f"a{turn}")], [counts[i] for i in kept] + [30]
        sent_before = messages
    # 350 tokens of room, 50 a turn: a cut every ~3-4 turns; one turn dropped each turn would cut 33 times
    assert 5 <= cuts <= 40 // 3


def test_a_trim_drops_whole_turns_and_respects_max_messages():
    messages = [_msg("user", "u0"), _msg("assistant", "a0"), _msg("user", "u1"), _msg("assistant", "a1"),
                _msg("user", "u2"), _msg("assistant", "a2"), _msg("user", "u3")]
    kept = trim_to_fit(messages, [10, 40, 10, 10, 10, 10, 10], budget=95)
    assert [messages[i]["content"] for i in kept][0].startswith("u")  # never an answer without its question
    assert trim_to_fit(messages, [1] * 7, budget=100, max_messages=7) == list(range(7))
    by_count = trim_to_fit(messages, [1] * 7, budget=100, max_messages=5)
    assert [messages[i]["content"] for i in by_count] == ["u2", "a2", "u3"]


def test_new_messages_are_counted_from_the_models_usage():
    new = [_msg("system", "x" * 300), _msg("user", "y" * 100)]
    counts = attribute(500, 100, new, [1, 1])
    assert sum(counts) == 400 and counts[0] > counts[1]  # the prompt's tokens add up
    assert attribute(50, 100, new, [1, 1]) == [1, 1]  # the kept history was overcounted: at least one each
    assert attribute(0, 100, new, [7, 8]) == [7, 8]  # no usage: the upper bounds stay


def test_the_telegram_window_is_cut_in_blocks():
    chat = [_msg("user" if i % 2 == 0 else "assistant", str(i)) for i in range(9)]
    assert block_window(chat, 9) == chat
    assert [m["content"] for m in block_window(chat, 8)] == ["6", "7", "8"]  # the newest half, from a user message
    assert [m["content"] for m in block_window(chat[:2], 1)] == ["1"]


def test_a_turn_holds_the_session_until_it_ends(store):
    sessions = SessionStore(store, 3600)

    async def scenario():
        turn = await sessions.begin("o1", "busy")
        with pytest.raises(SessionBusy) as busy:
            await sessions.begin("o1", "busy")
        assert (busy.value.status, busy.value.code) == (409, "session_busy")
        other = await sessions.begin("o2", "busy")  # another key's session of the same name
        await other.release()
        await turn.release()
        await (await sessions.begin("o1", "busy")).release()
    asyncio.run(scenario())


def test_a_turn_saved_over_a_newer_history_keeps_both(store):
    sessions = SessionStore(store, 3600)

    async def turn(text):
        t = await sessions.begin("o", "merge")
        await t.release()  # as if its lease had expired under a long turn
        t.combine([_msg("user", text)])
        t.fit(1000, None)
        return t

    async def scenario():
        await sessions.save("o", "merge", MODEL, [_msg("user", "u0"), _msg("assistant", "a0")], tokens=[5, 5])
        first, second = await turn("u1"), await turn("u2")
        await first.save(MODEL, GenerationResult("a1", "stop", Usage(20, 3)))
        await second.save(MODEL, GenerationResult("a2", "stop", Usage(20, 3)))
        record = await sessions.load("o", "merge")
        assert [m["content"] for m in record["messages"]] == ["u0", "a0", "u1", "a1", "u2", "a2"]
        assert len(record["tokens"]) == 6 and 50 < await store.ttl("session:o:merge") <= 3600
        deleted = await turn("u3")
        await sessions.delete("o", "merge")
        await deleted.save(MODEL, GenerationResult("a3", "stop", Usage(20, 3)))
        assert await sessions.load("o", "merge") is None  # a delete during a turn stays a delete
    asyncio.run(scenario())


def _replica() -> FakeReplica:
    """Answers "fine"; its prompt usage is 10 tokens a message."""
    return FakeReplica(pieces=("fine",), usage=lambda request: Usage(10 * len(request.messages), 2))


def _service(replica, store=None):
    router = router_over(replica, (MODEL,))
    sessions = SessionStore(store or MemoryStore(), 3600)
    service = GenerationService(router, Settings(), None, sessions)
    gated = []

    async def gate(entry):
        gated.append(entry.name)

    service.gate = gate
    return service, sessions, gated


def _turn(service, text, session_id="s1"):
    return service.start(admission(), MODEL, "r", SamplingParams(max_tokens=8), messages=[_msg("user", text)],
                         options=RequestOptions(endpoint="chat", owner=OWNER, session_id=session_id))


def test_a_session_turn_costs_one_replica_call_and_one_gate():
    replica = _replica()
    service, sessions, gated = _service(replica)

    async def scenario():
        for text in ("one", "two"):
            generation = await _turn(service, text)
            assert (await generation.collect()).text == "fine"
        return await sessions.load(OWNER, "s1")
    record = asyncio.run(scenario())
    assert len(replica.requests) == 2 and gated == [MODEL, MODEL]
    assert {r.conversation for r in replica.requests} == {f"{OWNER}/s1"}
    assert [m["content"] for m in replica.requests[1].messages] == ["one", "fine", "two"]
    assert [m["content"] for m in record["messages"]] == ["one", "fine", "two", "fine"]
    assert sum(record["tokens"][:3]) == 30  # the second prompt's usage (10 a message), then the answer's


def test_the_lease_is_released_when_a_turn_ends_or_fails_or_is_abandoned():
    replica = _replica()
    service, sessions, _ = _service(replica)

    async def scenario():
        first = await _turn(service, "held")
        with pytest.raises(SessionBusy):
            await _turn(service, "meanwhile")
        chunks = first.chunks()
        await chunks.__anext__()
        await chunks.aclose()  # the client left: nothing saved, the session free again
        assert await sessions.load(OWNER, "s1") is None
        with pytest.raises(Exception):
            await _turn(service, "x" * (Settings().max_prompt_length + 1))  # refused after the lease was taken
        await (await _turn(service, "after")).collect()
        assert [m["content"] for m in (await sessions.load(OWNER, "s1"))["messages"]] == ["after", "fine"]
    asyncio.run(scenario())


class _Status:
    def __init__(self, running):
        self.running = running

    async def states(self, fresh=False, stale_ok=False):
        return {MODEL: ("ready" if self.running else "unloaded", self.running)}


def test_forgetting_a_conversation_tolerates_a_model_without_it():
    config = load_models_file(ROOT / "models.json").models[MODEL]
    asked = []

    class _Forgets:
        class forget_conversation:  # noqa: N801 (a handle's method)
            @staticmethod
            async def remote(conversation):
                asked.append(conversation)
                return 1

    class _Older:  # a replica without the method: the call fails on it
        class forget_conversation:  # noqa: N801
            @staticmethod
            async def remote(conversation):
                raise AttributeError("forget_conversation")

    def run(handle, running):
        router = ModelRouter({MODEL: ModelEntry(MODEL, config, handle)}, MODEL)
        return asyncio.run(forget_conversation(router, _Status(running), MODEL, "o/s"))

    assert run(_Forgets, 1) is True and asked == ["o/s"]
    assert run(_Forgets, 0) is False and asked == ["o/s"]  # not loaded: nothing kept, nothing loaded
    assert run(_Older, 1) is False
    router = ModelRouter({}, None)
    assert asyncio.run(forget_conversation(router, _Status(1), "gone-model", "o/s")) is False


def test_a_record_saved_before_counts_were_kept_is_estimated():
    store = MemoryStore()
    asyncio.run(store.set("session:o:old", json.dumps({"session_id": "old", "model": MODEL, "updated": 1.0,
                                                       "messages": [_msg("user", "hello")]})))
    turn = asyncio.run(SessionStore(store, 60).begin("o", "old"))
    assert turn.history_counts == [len("hello") + 8]
