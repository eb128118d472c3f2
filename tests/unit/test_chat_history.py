import asyncio

from serve_app.chat_history import InMemoryChatHistory


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_history_is_bounded_by_messages_chats_and_idle_time():
    clock = Clock()
    store = InMemoryChatHistory(max_chats=2, max_messages=3, ttl_s=100, clock=clock)
    store.append_sync("a", [{"role": "user", "content": str(i)} for i in range(5)])
    assert [m["content"] for m in store.get_sync("a").messages] == ["2", "3", "4"]
    store.set_model_sync("b", "m")
    store.append_sync("c", [{"role": "user", "content": "x"}])  # a is the least recently used
    assert store.get_sync("a").messages == [] and store.get_sync("b").model == "m"
    clock.now = 101
    assert store.get_sync("b").model is None  # expired


def test_reset_keeps_model_and_updates_are_seen_once():
    store = InMemoryChatHistory()
    asyncio.run(store.set_model("a", "m"))
    asyncio.run(store.append("a", [{"role": "user", "content": "hi"}]))
    asyncio.run(store.set_pending("a", ["rest"]))
    asyncio.run(store.reset("a"))
    state = asyncio.run(store.get("a"))
    assert state.messages == [] and state.pending == [] and state.model == "m"
    assert asyncio.run(store.first_delivery("tg:1")) is True
    assert asyncio.run(store.first_delivery("tg:1")) is False
    assert asyncio.run(store.first_delivery("tg:2")) is True


def test_get_returns_a_copy():
    store = InMemoryChatHistory()
    store.append_sync("a", [{"role": "user", "content": "hi"}])
    store.get_sync("a").messages.append({"role": "user", "content": "sneaky"})
    assert len(store.get_sync("a").messages) == 1
