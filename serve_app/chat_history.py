"""Per-chat state for the bots (history, chosen model) behind a small interface.

`ChatHistoryStore` is what the Telegram bot uses. `InMemoryChatHistory` keeps it in one
process, bounded (least recently used chats dropped, idle chats expire). `ChatHistoryHub`
is a one-replica Ray Serve deployment holding one `InMemoryChatHistory`, and
`RemoteChatHistory` reaches it from every ingress replica, so all replicas share one state.
A Redis-backed store can implement the same protocol later.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol


@dataclass
class ChatState:
    messages: list[dict] = field(default_factory=list)  # [{"role", "content"}], oldest first
    model: Optional[str] = None
    pending: list[str] = field(default_factory=list)  # parts of a long answer not sent yet


class ChatHistoryStore(Protocol):
    async def get(self, chat: str) -> ChatState: ...

    async def append(self, chat: str, messages: list[dict]) -> None: ...

    async def reset(self, chat: str) -> None: ...

    async def set_model(self, chat: str, model: Optional[str]) -> None: ...

    async def set_pending(self, chat: str, parts: list[str]) -> None: ...

    async def first_delivery(self, update_key: str) -> bool:
        """True the first time `update_key` is seen (a repeated Telegram update_id gives False)."""
        ...


class InMemoryChatHistory:
    """LRU- and TTL-bounded; synchronous core with async wrappers so it satisfies the protocol."""

    def __init__(self, max_chats: int = 10000, max_messages: int = 20, ttl_s: float = 86400,
                 max_updates: int = 10000, clock: Callable[[], float] = time.monotonic):
        self.max_chats, self.max_messages, self.ttl_s = max_chats, max_messages, ttl_s
        self.max_updates = max_updates
        self._clock = clock
        self._chats: OrderedDict[str, tuple[float, ChatState]] = OrderedDict()
        self._updates: OrderedDict[str, None] = OrderedDict()

    def _live(self, chat: str) -> Optional[ChatState]:
        entry = self._chats.get(chat)
        if entry is None:
            return None
        at, state = entry
        if self._clock() - at > self.ttl_s:
            del self._chats[chat]
            return None
        return state

    def _touch(self, chat: str, state: ChatState) -> None:
        self._chats[chat] = (self._clock(), state)
        self._chats.move_to_end(chat)
        while len(self._chats) > self.max_chats:
            self._chats.popitem(last=False)

    def get_sync(self, chat: str) -> ChatState:
        state = self._live(chat)
        return ChatState(list(state.messages), state.model, list(state.pending)) if state else ChatState()

    def append_sync(self, chat: str, messages: list[dict]) -> None:
        state = self._live(chat) or ChatState()
        state.messages = (state.messages + list(messages))[-self.max_messages:]
        self._touch(chat, state)

    def reset_sync(self, chat: str) -> None:
        state = self._live(chat)
        if state is not None:
            state.messages, state.pending = [], []
            self._touch(chat, state)

    def set_model_sync(self, chat: str, model: Optional[str]) -> None:
        state = self._live(chat) or ChatState()
        state.model = model
        self._touch(chat, state)

    def set_pending_sync(self, chat: str, parts: list[str]) -> None:
        state = self._live(chat) or ChatState()
        state.pending = list(parts)
        self._touch(chat, state)

    def first_delivery_sync(self, update_key: str) -> bool:
        if update_key in self._updates:
            self._updates.move_to_end(update_key)
            return False
        self._updates[update_key] = None
        while len(self._updates) > self.max_updates:
            self._updates.popitem(last=False)
        return True

    async def get(self, chat: str) -> ChatState:
        return self.get_sync(chat)

    async def append(self, chat: str, messages: list[dict]) -> None:
        self.append_sync(chat, messages)

    async def reset(self, chat: str) -> None:
        self.reset_sync(chat)

    async def set_model(self, chat: str, model: Optional[str]) -> None:
        self.set_model_sync(chat, model)

    async def set_pending(self, chat: str, parts: list[str]) -> None:
        self.set_pending_sync(chat, parts)

    async def first_delivery(self, update_key: str) -> bool:
        return self.first_delivery_sync(update_key)


class ChatHistoryHub:
    """The Ray Serve deployment (one replica) that owns the shared in-process store."""

    def __init__(self, max_chats: int, max_messages: int, ttl_s: float):
        from deployments.ray_net import bind_replica_grpc_to_node_ip  # here: deployments imports serve_app

        bind_replica_grpc_to_node_ip()
        self.store = InMemoryChatHistory(max_chats, max_messages, ttl_s)

    def get(self, chat: str) -> ChatState:
        return self.store.get_sync(chat)

    def append(self, chat: str, messages: list[dict]) -> None:
        self.store.append_sync(chat, messages)

    def reset(self, chat: str) -> None:
        self.store.reset_sync(chat)

    def set_model(self, chat: str, model: Optional[str]) -> None:
        self.store.set_model_sync(chat, model)

    def set_pending(self, chat: str, parts: list[str]) -> None:
        self.store.set_pending_sync(chat, parts)

    def first_delivery(self, update_key: str) -> bool:
        return self.store.first_delivery_sync(update_key)


class RemoteChatHistory:
    """`ChatHistoryStore` over a `ChatHistoryHub` deployment handle."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def get(self, chat: str) -> ChatState:
        return await self.handle.get.remote(chat)

    async def append(self, chat: str, messages: list[dict]) -> None:
        await self.handle.append.remote(chat, messages)

    async def reset(self, chat: str) -> None:
        await self.handle.reset.remote(chat)

    async def set_model(self, chat: str, model: Optional[str]) -> None:
        await self.handle.set_model.remote(chat, model)

    async def set_pending(self, chat: str, parts: list[str]) -> None:
        await self.handle.set_pending.remote(chat, parts)

    async def first_delivery(self, update_key: str) -> bool:
        return await self.handle.first_delivery.remote(update_key)
