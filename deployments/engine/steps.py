"""What the engine did, step by step: the record tests assert on and the counters metrics read.

A step is one `llama_decode` over a batch. Its record says which sequences took part, how many
tokens each fed (1 while decoding, a prompt chunk while prefilling), which requests started at
that step and which adapter group ran. The last `keep` records are kept (a ring).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Optional

# Histogram buckets of tokens per step (Prometheus `le` bounds).
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class StepRecord:
    step: int
    decode: dict[str, int] = field(default_factory=dict)  # request id -> tokens fed (1)
    prefill: dict[str, int] = field(default_factory=dict)  # request id -> prompt tokens fed
    started: list[str] = field(default_factory=list)  # request ids admitted at this step
    priorities: dict[str, str] = field(default_factory=dict)  # started request id -> priority
    adapter: Optional[str] = None  # the LoRA group that ran (None: the base model)
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(self.decode.values()) + sum(self.prefill.values())


@dataclass
class EngineStats:
    """Counters since load (monotonic, for Prometheus counters) and the current gauges."""

    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_seconds: float = 0.0  # step time attributed to prefill tokens, by share of the batch
    decode_seconds: float = 0.0
    prefix_reused_tokens: int = 0  # prompt tokens found in a slot's cache, not computed again
    finished: int = 0
    step_token_buckets: list[int] = field(default_factory=lambda: [0] * (len(TOKEN_BUCKETS) + 1))
    step_token_sum: int = 0


class StepLog:
    def __init__(self, keep: int = 2048):
        self._records: deque[StepRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.stats = EngineStats()

    def add(self, record: StepRecord) -> None:
        stats = self.stats
        with self._lock:
            self._records.append(record)
            stats.steps += 1
            prefill, decode = sum(record.prefill.values()), sum(record.decode.values())
            stats.prefill_tokens += prefill
            stats.decode_tokens += decode
            total = prefill + decode
            if total:
                stats.prefill_seconds += record.seconds * prefill / total
                stats.decode_seconds += record.seconds * decode / total
            bucket = next((i for i, bound in enumerate(TOKEN_BUCKETS) if total <= bound), len(TOKEN_BUCKETS))
            stats.step_token_buckets[bucket] += 1
            stats.step_token_sum += total

    def records(self, since: int = 0) -> list[dict]:
        """Records with `step >= since`, oldest first, as plain dicts (they cross a Ray handle)."""
        with self._lock:
            return [asdict(r) for r in self._records if r.step >= since]

    def snapshot(self) -> dict:
        with self._lock:
            return asdict(self.stats)
