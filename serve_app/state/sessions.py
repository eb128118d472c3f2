"""Server-side chat sessions: the conversation lives in the store, keyed by its owner's key id.

A key reaches only its own sessions (the owner is part of every store key). A turn holds its
session's lease while it runs: another turn of the same session meanwhile answers 409
`session_busy` (answered from the history as it stands, one of the two would be lost or
contradict the other). The lease is deleted when the turn ends, completed or not, and expires
after TURN_LEASE_S if its ingress died. Each stored message keeps its token count, learned from
the model's usage, so a turn is trimmed to the context without asking the model first
(serve_app/state/session_trim.py).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

from core.errors import SessionBusy, StoreUnavailable
from core.types import GenerationResult
from serve_app.state.session_trim import answer_tokens, attribute, estimate, stored_counts, trim_to_fit
from serve_app.state.store import Store

logger = logging.getLogger("aicore.sessions")

# A turn's lease outlives any turn but a stuck one; a live turn deletes it when it ends.
TURN_LEASE_S = 300
SAVE_ATTEMPTS = 20


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

    @staticmethod
    def _lease(owner: str, session_id: str) -> str:
        return f"session-turn:{owner}:{session_id}"

    async def load(self, owner: str, session_id: str) -> Optional[dict]:
        raw = await self.store.get(self._key(owner, session_id))
        return json.loads(raw) if raw else None

    async def save(self, owner: str, session_id: str, model: str, messages: list[dict],
                   updated: Optional[float] = None, tokens: Optional[list[int]] = None) -> None:
        """`updated`: when the last turn happened (default now; an import gives the original time).
        The session expires SESSION_TTL_S after this call either way."""
        await self.store.set(self._key(owner, session_id), _dump(session_id, model, messages, tokens, updated),
                             ttl_s=self.ttl_s)
        await self._index_it(owner, session_id)

    async def _index_it(self, owner: str, session_id: str) -> None:
        await self.store.sadd(self._index(owner), session_id)
        await self.store.expire(self._index(owner), self.ttl_s)  # the index lives as long as its newest session

    async def delete(self, owner: str, session_id: str) -> Optional[dict]:
        """The deleted session's record (None: there was none)."""
        record = await self.load(owner, session_id)
        await self.store.delete(self._key(owner, session_id))
        await self.store.srem(self._index(owner), session_id)
        return record

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

    async def begin(self, owner: str, session_id: str) -> "SessionTurn":
        """Take the session's lease (or raise SessionBusy) and read its history."""
        # incr_window is an atomic create-with-expiry: whoever makes the counter 1 holds the lease.
        if await self.store.incr_window(self._lease(owner, session_id), 1, TURN_LEASE_S) != 1:
            raise SessionBusy(f"session {session_id!r} is answering another turn; send this turn after that "
                              "answer has ended", param="session_id")
        try:
            raw = await self.store.get(self._key(owner, session_id))
        except BaseException:
            await self.release(owner, session_id)
            raise
        return SessionTurn(self, owner, session_id, raw)

    async def release(self, owner: str, session_id: str) -> None:
        try:
            await self.store.delete(self._lease(owner, session_id))
        except StoreUnavailable:  # it expires on its own
            logger.error("session %s: lease not released, store unavailable", session_id)


class SessionTurn:
    """One turn of a session: the history as read, the messages sent, and the save of the answer."""

    def __init__(self, sessions: SessionStore, owner: str, session_id: str, raw: Optional[str]):
        self.sessions, self.owner, self.session_id, self.raw = sessions, owner, session_id, raw
        record = json.loads(raw) if raw else None
        self.history: list[dict] = record["messages"] if record else []
        self.history_counts = stored_counts(record)
        self.messages: list[dict] = []
        self.counts: list[int] = []
        self.stored = 0  # how many of `messages` come from the history
        self.kept: list[int] = []
        self.budget, self.max_messages = 0, None

    @property
    def conversation(self) -> str:
        return f"{self.owner}/{self.session_id}"

    def combine(self, new: list[dict]) -> list[dict]:
        """The history and the new messages; a resent system prompt replaces the stored one."""
        pairs = list(zip(self.history, self.history_counts))
        if any(m["role"] == "system" for m in new):
            pairs = [(m, c) for m, c in pairs if m["role"] != "system"]
        known = {(m["role"], m["content"]): c for m, c in zip(self.history, self.history_counts)}
        self.messages = [m for m, _ in pairs] + list(new)
        self.counts = [c for _, c in pairs] + [known.get((m["role"], m.get("content"))) or estimate(m) for m in new]
        self.stored = len(pairs)
        return self.messages

    def fit(self, budget: int, max_messages: Optional[int]) -> list[dict]:
        """The messages to send: trimmed in blocks to `budget` tokens and `max_messages`."""
        self.budget, self.max_messages = budget, max_messages
        self.kept = trim_to_fit(self.messages, self.counts, budget, max_messages)
        return [self.messages[i] for i in self.kept]

    def record(self, result: GenerationResult) -> tuple[list[dict], list[int], int]:
        """What this turn leaves: the messages sent and the answer, their token counts, and how
        many of them are this turn's own (the new messages and the answer)."""
        old = [i for i in self.kept if i < self.stored]
        new = [i for i in self.kept if i >= self.stored]
        old_counts = [self.counts[i] for i in old]
        new_counts = attribute(result.usage.prompt_tokens, sum(old_counts), [self.messages[i] for i in new],
                               [self.counts[i] for i in new])
        answer = {"role": "assistant", "content": result.text}
        messages = [self.messages[i] for i in self.kept] + [answer]
        counts = old_counts + new_counts + [answer_tokens(result.usage.completion_tokens, result.text)]
        return messages, counts, len(new) + 1

    async def save(self, model: str, result: GenerationResult) -> None:
        """Store the turn over the history it read; if the session changed meanwhile (a turn that
        outlived its lease), add this turn to the newer history; if it was deleted, it stays so."""
        store, key = self.sessions.store, self.sessions._key(self.owner, self.session_id)
        messages, counts, own = self.record(result)
        turn, turn_counts = messages[-own:], counts[-own:]
        raw = self.raw
        for _ in range(SAVE_ATTEMPTS):
            dumped = _dump(self.session_id, model, messages, counts)
            if raw is None:  # a new session: the only write that is not a compare-and-set
                await store.set(key, dumped, ttl_s=self.sessions.ttl_s)
                break
            if await store.compare_and_set(key, raw, dumped):
                await store.expire(key, self.sessions.ttl_s)  # a SET drops the expiry
                break
            raw = await store.get(key)
            if raw is None:
                return
            current = json.loads(raw)
            messages, counts = current["messages"] + turn, stored_counts(current) + turn_counts
            kept = trim_to_fit(messages, counts, self.budget, self.max_messages)
            messages, counts = [messages[i] for i in kept], [counts[i] for i in kept]
        else:
            logger.error("session %s: turn not saved, the session kept changing", self.session_id)
            return
        await self.sessions._index_it(self.owner, self.session_id)

    async def release(self) -> None:
        await self.sessions.release(self.owner, self.session_id)


def _dump(session_id: str, model: str, messages: list[dict], tokens: Optional[list[int]],
          updated: Optional[float] = None) -> str:
    record = {"session_id": session_id, "model": model, "messages": messages,
              "updated": time.time() if updated is None else updated}
    if tokens is not None:
        record["tokens"] = tokens
    return json.dumps(record)
