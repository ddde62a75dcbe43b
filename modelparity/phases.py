"""Where a check's time goes: seconds per phase of the harness's work, for the reports and the
harness-versus-bare benchmark (benchmarks/harness_vs_bare.py).

Phases nest (the noise floors need the reference outputs): time is charged to the innermost phase
only, so the phases of a check add up to at most its duration. Each thread keeps its own account
(parallel builds run in threads of their own).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# factory: the model's factory and identity; reference: torch eager (and its repeatability check);
# floors: the noise floors; build: conversions (or waiting for another process's); load: runners;
# run: the format's inference; compare: the statistics and the verdict
PHASES = ("factory", "reference", "floors", "build", "load", "run", "compare")


@dataclass
class _Open:
    phase: str
    since: float


class PhaseClock:
    """`with clock("build"): ...` charges the block to "build"; `take()` returns this thread's
    seconds per phase since the last take and starts a new account."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _state(self) -> tuple[dict[str, float], list[_Open]]:
        if not hasattr(self._local, "times"):
            self._local.times, self._local.stack = {}, []
        return self._local.times, self._local.stack

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        times, stack = self._state()
        now = time.perf_counter()
        if stack:  # pause the enclosing phase
            times[stack[-1].phase] = times.get(stack[-1].phase, 0.0) + now - stack[-1].since
        stack.append(_Open(phase, now))
        try:
            yield
        finally:
            now = time.perf_counter()
            closed = stack.pop()
            times[closed.phase] = times.get(closed.phase, 0.0) + now - closed.since
            if stack:
                stack[-1].since = now

    def take(self) -> dict[str, float]:
        times, _ = self._state()
        taken = {name: round(seconds, 4) for name, seconds in times.items()}
        times.clear()
        return taken


def add(total: dict[str, float], more: Mapping[str, float]) -> None:
    """Add `more`'s seconds into `total`, phase by phase."""
    for name, seconds in more.items():
        total[name] = round(total.get(name, 0.0) + seconds, 4)


def process_seconds() -> float:
    """How long this process has existed (Linux: its start time in /proc against the uptime; 0.0
    where that cannot be read): the session's start-up, counted from before Python itself began."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK")), 4)
