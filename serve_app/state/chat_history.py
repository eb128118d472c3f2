"""Per-chat state of the Telegram bot (history, chosen model, pending parts) on the shared store.

One JSON document per chat, `aicore:telegram:chat:<chat id>`, kept TELEGRAM_HISTORY_TTL_S after
its last change: in Redis when REDIS_URL is set (so it survives restarts and `serve_app.migrate`
exports it), else in the `StateHub`'s memory that every ingress replica shares. A change is a
compare-and-set of the document, applied again to the newer one when another update of the same
chat landed in between, so two messages answered at once both stay in the history.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from core.errors import KeyConflict
from serve_app.state.session_trim import block_window
from serve_app.state.store import Store

CHAT_PREFIX = "aicore:telegram:chat:"
UPDATE_PREFIX = "aicore:telegram:update:"
UPDATE_TTL_S = 86400  # Telegram stops redelivering an update after a day
MODIFY_ATTEMPTS = 20


@dataclass
class ChatState:
    messages: list[dict] = field(default_factory=list)  # [{"role", "content"}], oldest first
    model: Optional[str] = None
    pending: list[str] = field(default_factory=list)  # parts of a long answer not sent yet

    def dump(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def load(cls, raw: Optional[str]) -> "ChatState":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(list(data.get("messages") or []), data.get("model"), list(data.get("pending") or []))


class ChatHistory:
    """The bot's chats over a `Store`: each chat's newest messages, fewer than `max_messages` (the
    window sent to the model with the next one), the older half dropped at once when full;
    forgotten after `ttl_s` without a change. Store failures raise `StoreUnavailable` (the webhook answers 503 and
    Telegram delivers the update again later)."""

    def __init__(self, store: Store, max_messages: int = 20, ttl_s: float = 86400):
        self.store, self.max_messages, self.ttl_s = store, max_messages, ttl_s

    async def get(self, chat: str) -> ChatState:
        return ChatState.load(await self.store.get(CHAT_PREFIX + chat))

    async def append(self, chat: str, messages: list[dict]) -> None:
        def change(state: ChatState) -> None:
            # One below the window: the next user message completes it, so the bot never cuts what
            # it sends, and the start of the prompt changes only at a block cut (session_trim.py).
            state.messages = block_window(state.messages + list(messages), max(1, self.max_messages - 1))

        await self._modify(chat, change)

    async def reset(self, chat: str) -> None:
        """Forget the conversation (and pending parts); the chat keeps its model."""
        def change(state: ChatState) -> None:
            state.messages, state.pending = [], []

        await self._modify(chat, change)

    async def set_model(self, chat: str, model: Optional[str]) -> None:
        def change(state: ChatState) -> None:
            state.model = model

        await self._modify(chat, change)

    async def set_pending(self, chat: str, parts: list[str]) -> None:
        def change(state: ChatState) -> None:
            state.pending = list(parts)

        await self._modify(chat, change)

    async def first_delivery(self, update_id: int) -> bool:
        """True the first time an update id is seen (Telegram redelivers a slow or failed one)."""
        return await self.store.incr_window(f"{UPDATE_PREFIX}{update_id}", 1, UPDATE_TTL_S) == 1

    async def _modify(self, chat: str, change: Callable[[ChatState], None]) -> None:
        key = CHAT_PREFIX + chat
        for _ in range(MODIFY_ATTEMPTS):
            raw = await self.store.get(key)
            state = ChatState.load(raw)
            change(state)
            if raw is None:  # a new chat: the only write that is not a compare-and-set
                await self.store.set(key, state.dump(), ttl_s=self.ttl_s)
                return
            if await self.store.compare_and_set(key, raw, state.dump()):
                await self.store.expire(key, self.ttl_s)  # a SET drops the expiry: idle time counts anew
                return
        raise KeyConflict(f"chat {chat} is being changed by other updates; try again")
