"""What suites/latency times, and how: the runner's own inference call, warmed up until it settles,
for a number of rounds that fits a time budget. The timing itself is pytest-benchmark's.

Warm-up is measured, not guessed: torch's first calls on one CPU took 650 ms against 24 ms warm
(oneDNN builds its kernels per shape), ONNX Runtime and OpenVINO allocate on the first run. The
warm-up runs until the median of the last few calls stops falling, within a cap, and the report
records how many calls that took and what the first one cost.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.formats.base import Format, Runner

WINDOW = 3
SETTLED = 0.05  # a window whose median is within 5% of the previous one's has settled
DRIFT = 1.25  # the first third of the timed rounds 25% slower than the last third: not warm


class LatencyDriftWarning(UserWarning):
    """The timed rounds got faster while they were measured: the warm-up ended too early."""


@dataclass(frozen=True)
class WarmUp:
    calls: int
    settled_seconds: float
    settled: bool


def warm_up(call: Callable[[], Any], min_seconds: float = 0.2, max_seconds: float = 30.0,
            max_calls: int | None = None, clock: Callable[[], float] = time.perf_counter) -> WarmUp:
    """Call until the median of the last WINDOW calls is no more than SETTLED below the window
    before it, after at least 2 * WINDOW + 1 calls and `min_seconds`; stop unsettled at the caps.

    A runtime that stays slow for a while and then speeds up (a plateau) looks settled on the
    plateau: `min_seconds` must then cover the plateau, and `drift` on the timed rounds tells."""
    times: list[float] = []
    started = clock()
    while True:
        before = clock()
        call()
        times.append(clock() - before)
        calls, elapsed = len(times), clock() - started
        if calls > 2 * WINDOW and elapsed >= min_seconds:
            last = statistics.median(times[-WINDOW:])
            previous = statistics.median(times[-2 * WINDOW:-WINDOW])
            if last >= previous * (1 - SETTLED):
                return WarmUp(calls, last, True)
        if (max_calls is not None and calls >= max_calls) or elapsed >= max_seconds:
            return WarmUp(calls, statistics.median(times[-WINDOW:]), False)


def drift(samples: Sequence[float]) -> float:
    """Median of the first third of the rounds over the median of the last third (1.0: steady)."""
    third = max(len(samples) // 3, 1)
    return statistics.median(samples[:third]) / max(statistics.median(samples[-third:]), 1e-12)


def plan_rounds(seconds_per_call: float, budget_seconds: float, min_rounds: int = 5,
                max_rounds: int = 2000) -> int:
    """Rounds that fill the budget, at least `min_rounds` (percentiles need several), at most
    `max_rounds` (a 20 µs call would otherwise run a hundred thousand times)."""
    wanted = math.ceil(budget_seconds / max(seconds_per_call, 1e-9))
    return max(min_rounds, min(max_rounds, wanted))


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 of the per-call times (seconds). With few rounds p99 is close to the maximum."""
    values = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def timed_callable(runner: Runner, inputs: Mapping[str, np.ndarray]) -> tuple[Callable[[], Any], str]:
    """The call to time and what it covers. Raises NotTimeable when the runner says it cannot be
    timed in this process."""
    timed_call = getattr(runner, "timed_call", None)
    if timed_call is None:
        return (lambda: runner.run(inputs)), "run(): includes the runner's input and output conversion"
    return timed_call(inputs), "the runtime's inference call only"


def execution_facts(node: Format, runner: Runner) -> dict[str, Any]:
    """Provider, precision actually used, and threads, from what the runner reported.

    Precision is the runtime's own report where it gives one (OpenVINO's inference precision), else
    the artifact's precision (an FP16 ONNX model on ONNX Runtime's CPU provider still computes many
    operators in FP32: the report says which source the value comes from)."""
    facts = runner.facts
    reported = facts.get("inference_precision")
    return {
        "provider": str(facts.get("provider", facts.get("device", node.device))),
        "precision": str(reported) if reported else node.precision,
        "precision_source": "runtime" if reported else "artifact",
        "threads": facts.get("threads", "unknown"),
        "runtime": facts.get("runtime", "unknown"),
    }

