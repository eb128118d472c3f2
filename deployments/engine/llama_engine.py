"""Continuous batching over llama.cpp: many sequences, one `llama_decode` per step.

One context per replica holds `parallel` sequence slots (a KV stream each, `context_length`
cells per slot). One engine thread runs steps. Each step:

1. starts waiting requests in free slots (interactive first; see `admission.WaitingRoom`), in
   the free slot whose cached tokens share the longest prefix with the prompt (prefix reuse), or
   restores the conversation's KV from host memory when that shares more (`saved_prompts`);
2. builds one batch: the pending token of every decoding sequence, then prompt chunks of
   prefilling sequences, shortest rest first, up to `batch_tokens` in all (chunked prefill: a long
   prompt never holds the running streams back for more than one step's share);
3. calls `llama_decode` once, samples every sequence whose logits came out with its own sampler
   chain, detokenizes incrementally, applies stop strings and `max_tokens`, and hands text to
   the request's consumer (one event-loop wake-up per step for all the streams of a loop).

LoRA adapters are set per context, so sequences with different adapters cannot share a step:
each step runs one adapter group, groups take turns (round robin) while several have work.
A cancelled request leaves its slot at the next step; the slot keeps its cache for reuse.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import asdict
from typing import Optional

from core.errors import BackendFailure, InvalidRequest, ModelUnavailable
from deployments.engine.adapters import Adapters
from deployments.engine.admission import WaitingRoom
from deployments.engine.grammar import GrammarSampler
from deployments.engine.loop import StepLoop
from deployments.engine.samplers import end_token_bias, sampler_chain, token_bytes
from deployments.engine.saved_prompts import MIN_SAVED_TOKENS, SavedPrompts
from deployments.engine.sequence import Sequence, Slot, common_prefix
from deployments.engine.steps import StepRecord

logger = logging.getLogger("aicore.engine")

RESTORE_GAIN = 16  # a saved conversation is restored when it spares this many more tokens than a slot
SHARE_GAIN = 64  # a running sequence's prompt prefix is copied when it spares this many more tokens


class LlamaBatchEngine(StepLoop):
    def __init__(self, lib, model, *, model_name: str, parallel: int, context_length: int, batch_tokens: int,
                 threads: int, room: WaitingRoom, adapters: Adapters, keep_steps: int = 2048,
                 prefix_reuse: bool = True, saved_prompt_bytes: int = 0):
        self.lib, self.model_name = lib, model_name
        self.parallel, self.context_length, self.batch_tokens = parallel, context_length, batch_tokens
        self.adapters = adapters
        self.prefix_reuse = prefix_reuse
        self.vocab = lib.llama_model_get_vocab(model)
        self._pieces: dict[int, bytes] = {}  # token id -> its bytes: the vocabulary is fixed
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self._end_bias = end_token_bias(lib, self.vocab, self.n_vocab)
        self.grammars = GrammarSampler(lib, self.vocab, self.n_vocab)
        params = lib.llama_context_default_params()
        params.n_ctx = parallel * context_length
        params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = parallel
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each slot its own KV stream of context_length cells
        params.swa_full = True  # sliding-window models keep whole prompts, so prefixes can be reused
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(model, params)
        if not self.ctx:
            raise ModelUnavailable(f"llama.cpp could not create a context of {parallel} x {context_length} "
                                   f"tokens for model {model_name!r} (memory?)")
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(batch_tokens, 0, 1)
        self.slots = [Slot(seq_id=i) for i in range(parallel)]
        self.saved = SavedPrompts(lib, self.ctx, self.memory, saved_prompt_bytes)
        self._forgotten: list[str] = []  # conversations whose KV the free slots drop at the next step
        self._adapter: Optional[str] = None  # set on the context now
        self._group_turn = 0
        self._start_loop(model_name, room, keep_steps)

    @property
    def busy_slots(self) -> int:
        return sum(1 for s in self.slots if s.sequence is not None)

    def forget(self, conversation: str) -> int:
        """Drop a deleted session's kept KV: host entries now, free slots' cells at the next step."""
        dropped = self.saved.forget(conversation)
        with self.room.lock:
            self._forgotten.append(conversation)
        self._wake.set()
        return dropped + sum(1 for s in self.slots if s.conversation == conversation)

    def report(self) -> dict:
        return {**super().report(), "saved_prompts": asdict(self.saved.stats)}

    def close(self) -> None:
        if not self._stop_loop():  # a step still running: leave the memory to the process's end
            return
        self.saved.clear()
        self.adapters.free()
        self.grammars.free()
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    # ---- the engine thread ----

    def _step_once(self) -> bool:
        record = StepRecord(step=self._step)
        self._drop_cancelled()
        self._drop_forgotten()
        with self.room.lock:
            free = [s for s in self.slots if s.sequence is None]
            starting = self.room.take(len(free))
        for sequence, priority in starting:
            try:
                self._start(sequence, free)
            except Exception as error:
                if not isinstance(error, (BackendFailure, InvalidRequest)):
                    logger.exception("starting a request failed", extra={"model": self.model_name})
                    error = BackendFailure("the model failed to start the request")
                self._release(sequence)
                sequence.fail(error)
                self._touched.append(sequence)
            record.started.append(sequence.request_id)
            record.priorities[sequence.request_id] = priority
        running = [s.sequence for s in self.slots if s.sequence is not None and not s.sequence.finished]
        if not running:
            if record.started:
                self.log.add(record)
                self._step += 1
            return False
        group = self._choose_group(running)
        members = [q for q in running if q.adapter == group]
        entries = self._fill_batch(members, record)
        record.adapter = group
        if self.batch.n_tokens:  # a step of prompt chunks alone (no logits wanted) is decoded too
            started = time.perf_counter()
            self._decode()
            record.seconds = time.perf_counter() - started
            self._sample(entries)
        self.log.add(record)
        self._step += 1
        return True

    def _start(self, sequence: Sequence, free: list[Slot]) -> None:
        """Give `sequence` the free slot with the longest cached prefix (else the least recently used),
        or restore a saved conversation that shares more of the prompt into the least useful slot."""
        in_use = {s.sequence.adapter for s in self.slots if s.sequence is not None} | {sequence.adapter}
        if sequence.adapter is not None:
            self.adapters.get(sequence.adapter, in_use)  # raises BackendFailure: the caller fails the request

        def reusable(slot: Slot) -> int:
            same = (self.prefix_reuse and slot.adapter == sequence.adapter
                    and slot.cache_scope == sequence.cache_scope)
            return common_prefix(slot.cached, sequence.prompt) if same else 0

        shared = {slot.seq_id: reusable(slot) for slot in free}
        worth = min(32, len(sequence.prompt) // 2)  # below this, keep recent caches: take the LRU slot
        slot = max(free, key=lambda s: (shared[s.seq_id] if shared[s.seq_id] >= worth else 0, -s.last_used))
        found = shared[slot.seq_id] if shared[slot.seq_id] >= worth else 0
        saved, saved_found = (self.saved.best(sequence.cache_scope, sequence.adapter, sequence.prompt)
                              if self.prefix_reuse else (None, 0))
        restoring = saved is not None and saved_found >= worth and saved_found > found + RESTORE_GAIN
        if restoring:  # into the slot whose own cache serves this prompt least, the oldest of those
            slot = min(free, key=lambda s: (shared[s.seq_id], s.last_used))
        free.remove(slot)
        keep = min(saved_found if restoring else shared[slot.seq_id], len(sequence.prompt) - 1)
        if len(slot.cached) - (0 if restoring else keep) >= MIN_SAVED_TOKENS:
            self.saved.save(slot, slot.conversation)  # what this slot would lose: another chat's history
        if restoring:
            entry = self.saved.restore(saved, slot)
            if entry is None:
                keep = 0
            else:
                self.saved.stats.restored_tokens += keep
                if keep == len(entry.tokens):
                    self.saved.taken(saved)
        if not self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1):
            self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)  # whole: never fails
            keep = 0
        del slot.cached[keep:]
        slot.adapter, slot.cache_scope = sequence.adapter, sequence.cache_scope
        slot.conversation = sequence.conversation
        slot.sequence, sequence.slot = sequence, slot
        sequence.fed = keep
        if self.prefix_reuse:
            sequence.follows = self._leader(sequence, keep)
        sequence.admitted_at = time.monotonic()
        sequence.sampler = sampler_chain(self.lib, sequence.sampling, self.n_vocab, self._end_bias)
        if sequence.sampling.grammar:
            sequence.grammar = self.grammars.new(sequence.sampling.grammar)
        self.log.stats.prefix_reused_tokens += keep

    def _leader(self, sequence: Sequence, keep: int) -> Optional[tuple[Sequence, int]]:
        """A running sequence of the same scope and adapter whose prompt starts as this one's for at
        least SHARE_GAIN tokens more than `keep` (a burst of new chats with one system prompt): this
        one copies that prefix from it once computed, instead of computing it again."""
        best, most = None, keep + SHARE_GAIN - 1
        for slot in self.slots:
            other = slot.sequence
            if (other is None or other is sequence or other.follows is not None
                    or slot.adapter != sequence.adapter or slot.cache_scope != sequence.cache_scope):
                continue
            shared = min(common_prefix(other.prompt, sequence.prompt), len(sequence.prompt) - 1)
            if shared > most:
                best, most = other, shared
        return (best, most) if best is not None else None

    def _follow(self, sequence: Sequence) -> None:
        """Copy the leader's prefix once it is computed; prefill alone if the leader is gone."""
        leader, shared = sequence.follows
        if leader.finished:
            sequence.follows = None
        elif leader.fed >= shared:
            sequence.follows = None
            before = sequence.fed
            sequence.fed = shared if self.saved.copy(leader.slot, sequence.slot, shared) else 0
            self.log.stats.prefix_reused_tokens += max(0, sequence.fed - before)

    def _choose_group(self, running: list[Sequence]) -> Optional[str]:
        """The adapter group that runs this step: groups with work take turns."""
        groups = sorted({q.adapter for q in running}, key=lambda a: (a is not None, a or ""))
        group = groups[self._group_turn % len(groups)]
        self._group_turn += 1
        if group != self._adapter:
            self._set_adapter(group)
        return group

    def _set_adapter(self, name: Optional[str]) -> None:
        lib = self.lib
        if name is None:
            lib.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self.adapters.loaded[name])
            lib.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self._adapter = name

    def _fill_batch(self, members: list[Sequence], record: StepRecord) -> list[tuple[Sequence, int]]:
        """Decoding tokens first (every running stream advances), then prompt chunks in the room left."""
        batch, n = self.batch, 0
        entries: list[tuple[Sequence, int]] = []  # (sequence, batch index of its logits)

        def put(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = seq_id, logits
            n += 1

        for sequence in members:  # before any token goes in: a leader's `fed` is all computed now
            if sequence.follows is not None:
                self._follow(sequence)
        for sequence in members:
            if sequence.pending is not None:
                slot = sequence.slot
                put(sequence.pending, len(slot.cached), slot.seq_id, True)
                slot.cached.append(sequence.pending)
                sequence.pending = None
                entries.append((sequence, n - 1))
                record.decode[sequence.request_id] = 1
        # Shortest prompt rest first: a chat's short new turn (its history restored or in its slot)
        # reaches its first token in one step instead of waiting behind another's long prefill.
        prefilling = (q for q in members if q.prefilling)
        for sequence in sorted(prefilling, key=lambda q: (len(q.prompt) - q.fed, q.admitted_at)):
            room = self.batch_tokens - n
            if room <= 0:
                break
            if sequence.follows is not None:  # its prefix is being computed by its leader
                continue
            slot = sequence.slot
            chunk = sequence.prompt[sequence.fed:sequence.fed + room]
            last = sequence.fed + len(chunk) == len(sequence.prompt)
            for i, token in enumerate(chunk):
                put(token, sequence.fed + i, slot.seq_id, last and i == len(chunk) - 1)
            slot.cached.extend(chunk)
            sequence.fed += len(chunk)
            record.prefill[sequence.request_id] = len(chunk)
            if last:
                entries.append((sequence, n - 1))
        batch.n_tokens = n
        return entries

    def _decode(self) -> None:
        code = self.lib.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def _sample(self, entries: list[tuple[Sequence, int]]) -> None:
        lib = self.lib
        for sequence, index in entries:
            if sequence.cancelled:
                continue
            if sequence.grammar is None:
                token = lib.llama_sampler_sample(sequence.sampler, self.ctx, index)
            else:
                token = self.grammars.sample(self.ctx, index, sequence.sampler, sequence.grammar)
            self._touched.append(sequence)
            if token is None:  # the grammar admits nothing more
                self._finish(sequence, "stop")
                continue
            ends = not sequence.sampling.ignore_eos or sequence.grammar is not None
            if ends and lib.llama_vocab_is_eog(self.vocab, token):
                self._finish(sequence, "stop")
                continue
            sequence.produced += 1
            piece = self._piece(token)
            if sequence.sampling.logprobs is not None:
                sequence.token_logprobs.append(
                    self.grammars.logprobs(self.ctx, index, token, sequence.sampling.logprobs, self._piece))
            text, stopped = sequence.text_of(piece)
            sequence.emit(text)
            if stopped:
                self._finish(sequence, "stop", stopped=True)
            elif sequence.produced >= sequence.budget:
                self._finish(sequence, "length")
            else:
                sequence.pending = token

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_bytes(self.lib, self.vocab, token)
        return piece

    def _finish(self, sequence: Sequence, reason: str, stopped: bool = False) -> None:
        rest = "" if stopped else sequence.final_text()
        self._release(sequence)
        self.room.service.add(time.monotonic() - sequence.admitted_at)
        self.log.stats.finished += 1
        sequence.finish(reason, rest)

    def _release(self, sequence: Sequence) -> None:
        slot = sequence.slot
        if slot is not None:
            slot.sequence, slot.last_used = None, time.monotonic()
        if sequence.sampler is not None:
            self.lib.llama_sampler_free(sequence.sampler)
            sequence.sampler = None
        if sequence.grammar is not None:
            self.lib.llama_sampler_free(sequence.grammar)
            sequence.grammar = None

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            sequence = slot.sequence
            if sequence is not None and sequence.cancelled:
                self._release(sequence)
                sequence.finished = True
                sequence.outbox.clear()  # nobody listens any more

    def _drop_forgotten(self) -> None:
        with self.room.lock:
            forgotten, self._forgotten = set(self._forgotten), []
        for slot in self.slots:
            if slot.conversation in forgotten and slot.sequence is None:
                self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                slot.cached.clear()
                slot.conversation = None

    def _fail_running(self, error: BaseException) -> None:
        for slot in self.slots:
            sequence = slot.sequence
            if sequence is not None:
                self._release(sequence)
                self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                slot.cached.clear()
                sequence.fail(error)
                self._touched.append(sequence)

