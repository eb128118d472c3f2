"""Conversations' KV kept in host RAM, so that a chat's next turn prefills only its new tokens.

A replica has `parallel` slots; a bot serves more chats than that. When a slot is given to
another prompt, the tokens it would lose are saved first (llama.cpp's per-sequence state: the
slot's cells, copied to host memory); a later prompt that starts with those tokens gets them
restored into a free slot instead of computing them again (llama-server's `--cache-ram` idea).
A new chat finds the shared system prompt the same way: in a slot, or in a saved conversation,
restored whole and trimmed to the common prefix (with `kv_unified = False` llama.cpp copies only
whole streams between sequences, so a partial `seq_cp` is not an option).

Entries are found by the longest token prefix within the same cache scope (a key's own, see
`GenerationRequest.cache_scope`) and adapter, and evicted least recently used past a byte budget.
An entry remembers the server-side session it came from, so deleting the session drops it.
Only the engine thread saves and restores; `forget` may come from the replica's event loop.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from deployments.engine.sequence import Slot, common_prefix

MIN_SAVED_TOKENS = 64  # below this, computing the prefix again costs less than keeping it


@dataclass(eq=False)
class SavedPrompt:
    tokens: list[int]
    scope: Optional[str]
    adapter: Optional[str]
    conversation: Optional[str]
    data: ctypes.Array = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class SavedStats:
    saved: int = 0  # slot states written to host memory
    restored: int = 0  # and read back into a slot
    restored_tokens: int = 0  # prompt tokens a restore spared computing
    evicted: int = 0
    copied: int = 0  # shared prompt prefixes copied from a running sequence's slot
    copied_tokens: int = 0  # prompt tokens those copies spared computing
    bytes: int = 0  # held now
    entries: int = 0


class SavedPrompts:
    def __init__(self, lib, ctx, memory, budget_bytes: int):
        self.lib, self.ctx, self.memory, self.budget = lib, ctx, memory, budget_bytes
        self._entries: OrderedDict[int, SavedPrompt] = OrderedDict()  # least recently used first
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.stats = SavedStats()

    def best(self, scope: Optional[str], adapter: Optional[str], prompt: list[int]) -> tuple[Optional[int], int]:
        """The entry sharing the longest prefix with `prompt` (its id and that length)."""
        best_id, best_n = None, 0
        with self._lock:
            for key, entry in self._entries.items():
                if entry.scope == scope and entry.adapter == adapter and entry.tokens[0] == prompt[0]:
                    n = common_prefix(entry.tokens, prompt)
                    if n > best_n:
                        best_id, best_n = key, n
        return best_id, best_n

    def save(self, slot: Slot, conversation: Optional[str]) -> None:
        """Keep the slot's cells before they are overwritten (unless an entry already holds them)."""
        if self.budget <= 0 or len(slot.cached) < MIN_SAVED_TOKENS:
            return
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.scope != slot.cache_scope or entry.adapter != slot.adapter:
                    continue
                n = common_prefix(entry.tokens, slot.cached)
                if n == len(slot.cached):  # already kept (perhaps longer): nothing new to save
                    self._entries.move_to_end(key)
                    return
                if n == len(entry.tokens):  # an earlier turn of this conversation: superseded
                    self._drop(key)
        size = self.lib.llama_state_seq_get_size(self.ctx, slot.seq_id)
        if size <= 0 or size > self.budget:
            return
        data = (ctypes.c_uint8 * size)()
        if self.lib.llama_state_seq_get_data(self.ctx, data, size, slot.seq_id) != size:
            return
        with self._lock:
            while self._entries and self.stats.bytes + size > self.budget:
                self._drop(next(iter(self._entries)))
                self.stats.evicted += 1
            self._entries[next(self._ids)] = SavedPrompt(list(slot.cached), slot.cache_scope, slot.adapter,
                                                         conversation, data)
            self.stats.bytes += size
            self.stats.saved += 1
            self.stats.entries = len(self._entries)

    def restore(self, key: int, slot: Slot) -> Optional[SavedPrompt]:
        """Load an entry's cells into `slot` (its old cells dropped); None if the entry is gone or
        llama.cpp refused it (the slot is then empty)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        if self.lib.llama_state_seq_set_data(self.ctx, entry.data, entry.size, slot.seq_id) != entry.size:
            self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.cached.clear()
            return None
        slot.cached[:] = entry.tokens
        slot.cache_scope, slot.adapter = entry.scope, entry.adapter
        self.stats.restored += 1
        return entry

    def taken(self, key: int) -> None:
        """The entry was restored whole into a slot that now goes on from it: the slot holds it (and
        saves it again, longer, when it is needed elsewhere), so host memory need not."""
        with self._lock:
            if key in self._entries:
                self._drop(key)

    def copy(self, source: Slot, slot: Slot, keep: int) -> bool:
        """Give `slot` the first `keep` cells of another slot's sequence (still running there): a
        prompt prefix they share is computed once. False if llama.cpp refused (the slot is then empty)."""
        size = self.lib.llama_state_seq_get_size(self.ctx, source.seq_id)
        data = (ctypes.c_uint8 * size)()
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        slot.cached.clear()
        if (size <= 0 or self.lib.llama_state_seq_get_data(self.ctx, data, size, source.seq_id) != size
                or self.lib.llama_state_seq_set_data(self.ctx, data, size, slot.seq_id) != size):
            self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            return False
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1)
        slot.cached[:] = source.cached[:keep]
        self.stats.copied += 1
        self.stats.copied_tokens += keep
        return True

    def forget(self, conversation: str) -> int:
        """Drop every entry saved from this conversation; how many there were."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.conversation == conversation]
            for key in keys:
                self._drop(key)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def _drop(self, key: int) -> None:
        self.stats.bytes -= self._entries.pop(key).size
        self.stats.entries = len(self._entries)
