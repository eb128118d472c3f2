"""The Telegram bot's chats on each store: memory, the shared hub, and a real Redis."""

import asyncio
import uuid

import pytest

from serve_app.state.chat_history import CHAT_PREFIX, ChatHistory
from tests.unit.stores import store_params


@pytest.fixture(params=list(store_params()))
def store(request):
    return request.param()


def _chat() -> str:
    return str(uuid.uuid4().int % 10**12)  # tests share one Redis: a chat id of their own


def _turns(first: int, last: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(first, last)]


def test_history_is_cut_in_blocks_and_every_change_restarts_its_idle_time(store):
    async def scenario():
        chats, chat = ChatHistory(store, max_messages=5, ttl_s=100), _chat()

        async def contents():
            return [m["content"] for m in (await chats.get(chat)).messages]
        await chats.append(chat, _turns(0, 6))
        assert await contents() == ["4", "5"]  # below the window of 5 (the next message completes it): half kept
        await chats.append(chat, _turns(6, 8))
        assert await contents() == ["4", "5", "6", "7"]  # the start stays while it fits
        await chats.append(chat, _turns(8, 10))
        assert await contents() == ["8", "9"]
        await store.expire(CHAT_PREFIX + chat, 10)
        await chats.set_model(chat, "m")  # a compare-and-set (which drops an expiry) and the idle time anew
        assert 90 < await store.ttl(CHAT_PREFIX + chat) <= 100
        assert (await chats.get(_chat())).messages == []  # an unknown chat starts empty
    asyncio.run(scenario())


def test_reset_keeps_the_model_and_an_update_is_seen_once(store):
    async def scenario():
        chats, chat = ChatHistory(store), _chat()
        await chats.set_model(chat, "m")
        await chats.append(chat, [{"role": "user", "content": "hi"}])
        await chats.set_pending(chat, ["rest"])
        await chats.reset(chat)
        state = await chats.get(chat)
        assert state.messages == [] and state.pending == [] and state.model == "m"
        update = uuid.uuid4().int % 10**9
        assert [await chats.first_delivery(update) for _ in range(3)] == [True, False, False]
        assert await chats.first_delivery(update + 1) is True
    asyncio.run(scenario())


def test_concurrent_answers_in_one_chat_all_stay_in_its_history(store):
    async def scenario():
        chats, chat = ChatHistory(store, max_messages=50), _chat()
        await chats.set_model(chat, "m")
        await asyncio.gather(*(chats.append(chat, [{"role": "user", "content": str(i)}]) for i in range(12)))
        assert sorted(int(m["content"]) for m in (await chats.get(chat)).messages) == list(range(12))
    asyncio.run(scenario())


def test_a_fresh_history_over_the_same_store_sees_the_chat(store):
    """What a restarted ingress sees: the state is in the store, not in the object."""
    async def scenario():
        chat = _chat()
        await ChatHistory(store).append(chat, [{"role": "user", "content": "remember me"}])
        await ChatHistory(store).set_pending(chat, ["part two"])
        state = await ChatHistory(store).get(chat)
        assert state.messages == [{"role": "user", "content": "remember me"}] and state.pending == ["part two"]
    asyncio.run(scenario())
