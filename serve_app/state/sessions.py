"""Server-side chat sessions: the conversation lives in the store, keyed by its owner's key id.

A key reaches only its own sessions (the owner is part of every store key). The history
is trimmed, oldest turns first, to leave room in the model's context for the answer;
system messages always stay.
"""

from __future__ import annotations

import json
import time
from typing import Optional

from serve_app.state.store import Store


def trim_to_fit(messages: list[dict], token_counts: list[int], budget: int) -> list[dict]:
    """Drop the oldest non-system messages until the counted tokens fit `budget`, then, if that is
    not enough, the oldest system messages but the last one.

    The newest message always stays (if it alone does not fit, the model says so).
    """
    keep = list(range(len(messages)))
    total = sum(token_counts)
    systems = [i for i, m in enumerate(messages) if m["role"] == "system"]
    for droppable in ([i for i in keep[:-1] if i not in systems], systems[:-1]):
        for index in droppable:
            if total <= budget:
                break
            if index in keep and index != len(messages) - 1:
                keep.remove(index)
                total -= token_counts[index]
    return [messages[i] for i in keep]


class SessionStore:
    def __init__(self, store: Store, ttl_s: float):
        self.store = store
        self.ttl_s = ttl_s

    @staticmethod
    def _key(owner: str, session_id: str) -> str:
        return f"session:{owner}:{session_id}"

    @staticmethod
    def _index(owner: str) -> str:
        return f"sessions:{owner}"

    async def load(self, owner: str, session_id: str) -> Optional[dict]:
        raw = await self.store.get(self._key(owner, session_id))
        return json.loads(raw) if raw else None

    async def save(self, owner: str, session_id: str, model: str, messages: list[dict],
                   updated: Optional[float] = None) -> None:
        """`updated`: when the last turn happened (default now; an import gives the original time).
        The session expires SESSION_TTL_S after this call either way."""
        record = {"session_id": session_id, "model": model, "messages": messages,
                  "updated": time.time() if updated is None else updated}
        await self.store.set(self._key(owner, session_id), json.dumps(record), ttl_s=self.ttl_s)
        await self.store.sadd(self._index(owner), session_id)
        await self.store.expire(self._index(owner), self.ttl_s)  # the index lives as long as its newest session

    async def delete(self, owner: str, session_id: str) -> bool:
        existed = await self.load(owner, session_id) is not None
        await self.store.delete(self._key(owner, session_id))
        await self.store.srem(self._index(owner), session_id)
        return existed

    async def list(self, owner: str) -> list[dict]:
        sessions = []
        for session_id in sorted(await self.store.smembers(self._index(owner))):
            record = await self.load(owner, session_id)
            if record is None:  # expired: forget it in the index too
                await self.store.srem(self._index(owner), session_id)
                continue
            sessions.append({"session_id": session_id, "model": record["model"],
                             "messages": len(record["messages"]), "updated": record["updated"]})
        return sessions
