"""Continuous batching for the transformers and ONNX text backends: one forward pass per step over
a left-padded batch that shares one KV cache.

The batch is B rows (one per running sequence) over W cache columns; row r's first `pads[r]`
columns are padding, masked out of attention. Each step:

1. drops cancelled sequences (their rows leave the cache at once);
2. starts waiting requests while rows are free (interactive first, see `admission.WaitingRoom`):
   each prompt is prefilled alone (one forward over its tokens, no padding), its first token is
   sampled and sent at once, and its KV joins the batch, left-padded to the batch's width (or the
   batch padded to its). Prompt tokens prefilled per step stop at `batch_tokens` (at least one
   prompt a step), so a burst of new requests delays the running streams by a bounded amount;
3. runs one decode step: the pending token of every row, with explicit position ids (each row's
   own count of real tokens) and the padding mask; samples each row with its own parameters and
   random generator (`sampling.choose`), applies stop strings and `max_tokens`, and sends text.

Padding changes nothing mathematically (masked keys get zero weight, positions are each row's
own), but matrix products over B rows are rounded differently from one row: logits differ by
~1e-6, which can flip a greedy choice only where the top two logits are that close.

LoRA adapters (transformers) are switched per model, so rows of different adapters cannot share a
forward pass: each adapter group has its own padded batch, and groups with rows take turns, one
decode step each (as the GGUF engine's groups do). No adapter a row uses is evicted.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from core.errors import BackendFailure
from deployments.engine.admission import WaitingRoom
from deployments.engine.logits_sampling import choose
from deployments.engine.loop import StepLoop
from deployments.engine.sequence import Sequence
from deployments.engine.steps import StepRecord
from deployments.engine.text import TokenText

logger = logging.getLogger("aicore.engine")


class TensorModel(ABC):
    """What the engine needs from a model. `cache` is the model's own KV object (tensors or arrays)
    holding B rows by W columns; only the engine thread calls these."""

    @abstractmethod
    def prefill(self, ids: list[int]) -> tuple[np.ndarray, Any]:
        """Run one prompt alone: the last position's logits (vocab,) and its cache (1 row, len(ids) columns)."""

    @abstractmethod
    def decode(self, cache: Any, tokens: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        """One token per row (`tokens` (B,), at `positions` (B,)); `mask` (B, W+1) is 0 on padding.
        Returns logits (B, vocab) and the cache with one more column."""

    @abstractmethod
    def join(self, cache: Any, width: int, row: Any, row_width: int) -> Any:
        """`cache` (W=`width` columns) with `row` appended as its last row, both left-padded to the wider."""

    @abstractmethod
    def keep(self, cache: Any, rows: list[int], drop: int) -> Any:
        """Only `rows` of `cache`, in that order, without its first `drop` columns."""

    def adapter_scope(self, name: Optional[str], in_use: set):
        """Make adapter `name` (None: the base model) active for one forward pass; never evict `in_use` ones."""
        return nullcontext()


@dataclass(eq=False)
class TextSequence(Sequence):
    """A request of a tensor engine: text comes from the tokenizer's decode of the whole completion."""

    eos_ids: frozenset = frozenset()
    text: Optional[TokenText] = None
    rng: Any = None
    completion: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, decode: Callable[[list[int]], str], eos_ids, **fields) -> "TextSequence":
        sequence = cls(**fields, eos_ids=frozenset(eos_ids))
        sequence.text = TokenText(decode, sequence.stops)
        seed = sequence.sampling.seed
        sequence.rng = np.random.default_rng(seed if seed is not None else random.randint(0, 2**31 - 1))
        return sequence


def _group_key(adapter: Optional[str]) -> tuple:
    return (adapter is not None, adapter or "")


@dataclass(eq=False)
class Group:
    """The running rows of one adapter (None: the base model): one left-padded batch and its cache."""

    adapter: Optional[str]
    rows: list[TextSequence] = field(default_factory=list)  # one per cache row, in row order
    pads: list[int] = field(default_factory=list)  # padding columns at the left of each row
    cache: Any = None
    width: int = 0  # cache columns

    def join(self, model: TensorModel, sequence: TextSequence, cache: Any) -> None:
        """Append a prefilled sequence's cache as the last row, padding whichever side is narrower."""
        n = len(sequence.prompt)
        self.cache = model.join(self.cache, self.width, cache, n)
        wider = max(self.width, n)
        self.pads = [pad + wider - self.width for pad in self.pads] + [wider - n]
        self.width = wider
        self.rows.append(sequence)

    def leave(self, model: TensorModel, gone: list[TextSequence]) -> None:
        """Take the rows of `gone` out, and the padding columns no row needs any more."""
        keep = [r for r, q in enumerate(self.rows) if q not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[r] for r in keep]
        if not keep:
            self.cache, self.pads, self.width = None, [], 0
            return
        drop = min(self.pads[r] for r in keep)
        self.cache = model.keep(self.cache, keep, drop)
        self.pads = [self.pads[r] - drop for r in keep]
        self.width -= drop


class PaddedBatchEngine(StepLoop):
    def __init__(self, model: TensorModel, *, model_name: str, parallel: int, batch_tokens: int,
                 room: WaitingRoom, keep_steps: int = 2048):
        self.model = model
        self.parallel, self.batch_tokens = parallel, batch_tokens
        self.groups: dict[Optional[str], Group] = {}  # adapter -> its running rows
        self.held: deque[tuple[TextSequence, str]] = deque()  # taken from the room, not started yet
        self._last_group: Optional[tuple] = None  # the key of the group that decoded last
        self._start_loop(model_name, room, keep_steps)

    @property
    def waiting(self) -> int:
        return len(self.room) + len(self.held)

    @property
    def busy_slots(self) -> int:
        return sum(len(group.rows) for group in list(self.groups.values()))

    def _free_slots(self) -> int:
        return self.parallel - self.busy_slots - len(self.held)

    def report(self) -> dict:
        report = super().report()
        for _, priority in list(self.held):
            report["waiting"][priority] += 1
        return report

    def close(self) -> None:
        self._stop_loop()

    # ---- the engine thread ----

    def _scope(self, adapter: Optional[str]):
        return self.model.adapter_scope(adapter, {a for a, group in self.groups.items() if group.rows})

    def _step_once(self) -> bool:
        record = StepRecord(step=self._step)
        self._drop_cancelled()
        self._start_waiting(record)
        if self.groups:
            self._decode(self._next_group(), record)
        if record.started or record.decode:
            self.log.add(record)
            self._step += 1
        return bool(self.groups) or bool(self.held)

    def _next_group(self) -> Group:
        """Groups with rows take turns, one decode step each: the next after the last one run."""
        order = sorted(self.groups, key=_group_key)
        last = self._last_group
        adapter = next((a for a in order if last is not None and _group_key(a) > last), order[0])
        self._last_group = _group_key(adapter)
        return self.groups[adapter]

    def _decode(self, group: Group, record: StepRecord) -> None:
        started = time.perf_counter()
        tokens = np.asarray([q.pending for q in group.rows], dtype=np.int64)
        positions = np.asarray([group.width - pad for pad in group.pads], dtype=np.int64)
        mask = np.ones((len(group.rows), group.width + 1), dtype=np.int64)
        for r, pad in enumerate(group.pads):
            mask[r, :pad] = 0
        with self._scope(group.adapter):
            logits, group.cache = self.model.decode(group.cache, tokens, positions, mask)
        group.width += 1
        record.seconds += time.perf_counter() - started
        record.adapter = group.adapter
        for sequence, row in zip(list(group.rows), logits):
            record.decode[sequence.request_id] = 1
            self._advance(sequence, row)
        group.leave(self.model, [q for q in group.rows if q.finished])
        if not group.rows:
            del self.groups[group.adapter]

    def _candidates(self) -> list[tuple[TextSequence, str]]:
        """Requests that may start now: those held from an earlier step first, then the room's."""
        free = self.parallel - self.busy_slots
        if free > len(self.held):
            with self.room.lock:
                self.held.extend(self.room.take(free - len(self.held)))
        return [self.held.popleft() for _ in range(min(free, len(self.held)))]

    def _start_waiting(self, record: StepRecord) -> None:
        prefilled = 0
        candidates = self._candidates()
        for index, (sequence, priority) in enumerate(candidates):
            if prefilled and prefilled + len(sequence.prompt) > self.batch_tokens:
                self.held.extendleft(reversed(candidates[index:]))  # first in line at the next step
                return
            if sequence.cancelled:
                continue
            started = time.perf_counter()
            try:
                with self._scope(sequence.adapter):  # loads the adapter on first use
                    logits, cache = self.model.prefill(sequence.prompt)
            except Exception as error:
                logger.exception("starting a request failed", extra={"model": self.model_name})
                sequence.fail(error if isinstance(error, BackendFailure)
                              else BackendFailure("the model failed to start the request"))
                self._touched.append(sequence)
                continue
            record.seconds += time.perf_counter() - started
            prefilled += len(sequence.prompt)
            record.prefill[sequence.request_id] = len(sequence.prompt)
            record.started.append(sequence.request_id)
            record.priorities[sequence.request_id] = priority
            sequence.admitted_at = time.monotonic()
            self._advance(sequence, logits)
            self._post()  # its first token goes out now, not after the other prefills of this step
            if not sequence.finished:
                self.groups.setdefault(sequence.adapter, Group(sequence.adapter)).join(self.model, sequence, cache)

    def _advance(self, sequence: TextSequence, logits: np.ndarray) -> None:
        """Choose the next token from `logits` and apply it: text, stop strings, end of sequence, budget."""
        s = sequence.sampling
        banned = tuple(sequence.eos_ids) if s.ignore_eos else ()
        token = choose(logits, sequence.prompt + sequence.completion, sequence.completion, s, sequence.rng, banned)
        self._touched.append(sequence)
        if token in sequence.eos_ids and not s.ignore_eos:
            self._finish(sequence, "stop")
            return
        sequence.completion.append(token)
        sequence.produced += 1
        sequence.emit(sequence.text.push(token))
        if sequence.text.stopped:
            self._finish(sequence, "stop")
        elif sequence.produced >= sequence.budget:
            self._finish(sequence, "length")
        else:
            sequence.pending = token

    def _finish(self, sequence: TextSequence, reason: str) -> None:
        self.room.service.add(time.monotonic() - sequence.admitted_at)
        self.log.stats.finished += 1
        sequence.finish(reason, sequence.text.finish())

    def _drop_cancelled(self) -> None:
        for adapter, group in list(self.groups.items()):
            cancelled = [q for q in group.rows if q.cancelled]
            for sequence in cancelled:
                sequence.finished = True
                sequence.outbox.clear()  # nobody listens any more
            group.leave(self.model, cancelled)
            if not group.rows:
                del self.groups[adapter]
        self.held = deque(item for item in self.held if not item[0].cancelled)

    def _left_waiting(self) -> list[Sequence]:
        held, self.held = [sequence for sequence, _ in self.held], deque()
        return held + super()._left_waiting()

    def _fail_running(self, error: BaseException) -> None:
        for group in self.groups.values():
            for sequence in group.rows:
                sequence.fail(error)
                self._touched.append(sequence)
        self.groups = {}
