"""Who runs next: the waiting room of one engine, by priority, with bounds and an honest wait estimate.

Pure bookkeeping, no llama.cpp: the engine thread asks `take(free_slots)` at each step; the
replica's event loop asks `admit(...)` when a request arrives. Both hold `lock`.

- Two classes: `interactive` (chat, completions, WebSocket, Telegram) and `batch` (bulk email
  work). Waiting interactive requests always go first.
- Within a class, tenants (API keys) take turns: each free slot goes to the next key in
  rotation, first come within a key, so one key's burst cannot hold every slot while others wait.
- Batch work never takes the last `interactive_reserve` free slots, so an interactive request
  arriving while batch work fills every slot it may use still starts at the next step.
- A request is refused at once (`Overloaded`, 503 + Retry-After) when the room is full
  (`max_queued`) or when its estimated wait (its place in line x the measured time per request /
  slots) passes `max_wait_s`: waiting longer than the caller's timeout helps nobody.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

from core.errors import Overloaded

PRIORITIES = ("interactive", "batch")
T = TypeVar("T")


@dataclass
class ServiceTime:
    """Exponential moving average of seconds a request holds a slot (admitted -> finished)."""

    seconds: Optional[float] = None
    weight: float = 0.2

    def add(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else (1 - self.weight) * self.seconds + self.weight * seconds


@dataclass
class WaitingRoom(Generic[T]):
    slots: int
    max_queued: int
    max_wait_s: float
    interactive_reserve: int = 0
    service: ServiceTime = field(default_factory=ServiceTime)
    refused: dict = field(default_factory=lambda: {p: 0 for p in PRIORITIES})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._queues: dict[str, _TurnQueue[T]] = {p: _TurnQueue() for p in PRIORITIES}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def lengths(self) -> dict[str, int]:
        return {p: len(q) for p, q in self._queues.items()}

    def estimated_wait_s(self, ahead: int) -> float:
        """Seconds until a request with `ahead` requests before it gets a slot (0 if unknown)."""
        if self.service.seconds is None:
            return 0.0
        return (ahead + 1) * self.service.seconds / max(1, self.slots)

    def retry_after_s(self) -> int:
        """When a refused caller should try again: about when the queue ahead has drained."""
        return max(1, math.ceil(self.estimated_wait_s(len(self))))

    def admit(self, item: T, priority: str, free_slots: int, tenant: str = "-") -> None:
        """Queue `item` of `tenant`, or raise `Overloaded`. Call with `lock` held."""
        if priority not in self._queues:
            raise ValueError(f"unknown priority {priority!r}")
        ahead = len(self._queues["interactive"]) if priority == "interactive" else len(self)
        if free_slots > 0 and ahead == 0:
            ahead = -1  # a slot is free now: it starts at the next step
        too_many = len(self) >= self.max_queued
        too_long = ahead >= 0 and self.estimated_wait_s(ahead) > self.max_wait_s
        if too_many or too_long:
            self.refused[priority] += 1
            why = (f"{len(self)} requests are waiting (the limit is {self.max_queued})" if too_many else
                   f"the estimated wait of {self.estimated_wait_s(ahead):.0f}s passes {self.max_wait_s:g}s")
            raise Overloaded(f"the model is overloaded: {why}; retry later", retry_after_s=self.retry_after_s())
        self._queues[priority].append(item, tenant)

    def remove(self, item: T) -> bool:
        """Take back a request that has not started (its client left). Call with `lock` held."""
        return any(queue.remove(item) for queue in self._queues.values())

    def take(self, free_slots: int) -> list[tuple[T, str]]:
        """Requests to start now, interactive first; batch leaves `interactive_reserve` slots free.
        Call with `lock` held."""
        started: list[tuple[T, str]] = []
        while free_slots > 0 and self._queues["interactive"]:
            started.append((self._queues["interactive"].popleft(), "interactive"))
            free_slots -= 1
        while free_slots > self.interactive_reserve and self._queues["batch"]:
            started.append((self._queues["batch"].popleft(), "batch"))
            free_slots -= 1
        return started


class _TurnQueue(Generic[T]):
    """Requests of one class: a queue per tenant, the tenants served in rotation."""

    def __init__(self) -> None:
        self._tenants: OrderedDict[str, deque[T]] = OrderedDict()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def append(self, item: T, tenant: str) -> None:
        self._tenants.setdefault(tenant, deque()).append(item)
        self._length += 1

    def popleft(self) -> T:
        """The oldest request of the tenant whose turn it is; that tenant then goes last."""
        tenant, queue = next(iter(self._tenants.items()))
        item = queue.popleft()
        self._length -= 1
        if queue:
            self._tenants.move_to_end(tenant)
        else:
            del self._tenants[tenant]
        return item

    def remove(self, item: T) -> bool:
        for tenant, queue in self._tenants.items():
            try:
                queue.remove(item)
            except ValueError:
                continue
            self._length -= 1
            if not queue:
                del self._tenants[tenant]
            return True
        return False
