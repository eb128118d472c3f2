"""How much CPU other processes took while a benchmark ran (Linux /proc; None elsewhere).

On a shared machine a figure is only worth as much as the quiet around it: "others" is the
machine's busy time (/proc/stat, which counts processes that have exited too) less what this
process and the sessions of the servers it started used (a `serve run` keeps Ray's workers in its
session). Reported as a share of the machine's capacity over the measured wall time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Optional

PROC = Path("/proc")


def busy_ticks(stat_text: str) -> int:
    """Busy clock ticks of all CPUs from /proc/stat's first line (idle and iowait excluded;
    guest time is already inside user time)."""
    fields = [int(x) for x in stat_text.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def process_ticks(stat_line: str) -> tuple[int, int]:
    """(session id, user + system ticks) from a /proc/<pid>/stat line (comm may hold spaces)."""
    rest = stat_line[stat_line.rindex(")") + 2:].split()
    return int(rest[3]), int(rest[11]) + int(rest[12])


def _ours(sessions: set[int], own_pid: int) -> int:
    total = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sid, ticks = process_ticks((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if int(entry.name) == own_pid or sid in sessions:
            total += ticks
    return total


class OtherLoad:
    """`start()` then `share()`: the fraction (0..1) of the machine other processes used in between."""

    def __init__(self, server_pids: Iterable[int]):
        self.sessions = {os.getsid(pid) for pid in server_pids}
        self.available = (PROC / "stat").exists()

    def _sample(self) -> tuple[float, int, int]:
        return time.monotonic(), busy_ticks((PROC / "stat").read_text()), _ours(self.sessions, os.getpid())

    def start(self) -> "OtherLoad":
        self._begin = self._sample() if self.available else None
        return self

    def share(self) -> Optional[float]:
        if not self.available or self._begin is None:
            return None
        (t0, busy0, ours0), (t1, busy1, ours1) = self._begin, self._sample()
        others_s = max(0, (busy1 - busy0) - (ours1 - ours0)) / os.sysconf("SC_CLK_TCK")
        capacity_s = (t1 - t0) * len(os.sched_getaffinity(0))
        return others_s / capacity_s if capacity_s > 0 else None
