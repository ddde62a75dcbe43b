"""The reference is checked before any format is judged against it.

Torch eager FP32 is the `ref` side of every comparison, so a reference that gives two answers to one
question makes every verdict meaningless: a tolerance wide enough to cover its spread passes broken
formats, a narrow one blames correct formats. Before any format of a model is compared, its module
runs once to show that the harness can name what it returns, then twice more on the same inputs (same
threads); outputs must agree to float32 rounding. A model that fails is reported by its own check,
and every format of it is "not judged" rather than failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from modelparity.spec import SpecError

# Repeatable means bit-identical, or within this share of the output's RMS: float32 rounding (a
# reduction whose split changed between calls) and not what dropout or a random op leave (a 0.1
# dropout changes a tenth of the activations entirely: 1e-1 x RMS and more).
REPEATABILITY = 1e-6


class ReferenceProblem(SpecError):
    """The reference cannot serve as one: the message says what was found and the usual causes."""


@dataclass(frozen=True)
class ReferenceVerdict:
    """What the reference check found: `problem` is None when the reference can be used."""

    model: str
    problem: str | None
    max_difference: float = 0.0
    output: str | None = None


NONDETERMINISM_CAUSES = ("dropout or batch-norm left in training mode (call module.eval(), or "
                         "F.dropout(..., training=self.training)), random ops in forward "
                         "(torch.rand*, torch.randn*, bernoulli, multinomial), or uninitialised memory "
                         "(torch.empty read before it is written)")


def check_reference(name: str, run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                    inputs: Mapping[str, np.ndarray]) -> ReferenceVerdict:
    """`run(inputs) -> named outputs` (torch eager): named once, then repeated on the same inputs."""
    try:
        first = run(inputs)
    except Exception as error:  # the user's module decides what fails; say what, never raise
        return ReferenceVerdict(name, f"model {name!r}: torch eager failed on the spec's own inputs "
                                      f"(shapes { {k: list(v.shape) for k, v in inputs.items()} }): "
                                      f"{type(error).__name__}: {error}")
    second = run(inputs)
    worst, where = 0.0, None
    for output, value in first.items():
        a, b = np.asarray(value, np.float64), np.asarray(second[output], np.float64)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if same.all():
            continue
        difference = float(np.nanmax(np.abs(np.where(same, 0.0, a - b))))
        rms = float(np.sqrt(np.nanmean(a[np.isfinite(a)] ** 2))) if np.isfinite(a).any() else 0.0
        if difference > REPEATABILITY * rms and difference > worst:
            worst, where = difference, output
    if where is None:
        return ReferenceVerdict(name, None)
    return ReferenceVerdict(
        name, f"model {name!r}: the reference is nondeterministic: torch eager gave different outputs "
              f"for the same inputs on two calls (output {where!r}, max difference {worst:.3g}, inputs "
              f"of shapes { {k: list(v.shape) for k, v in inputs.items()} }). No format can be judged "
              f"against it. Usual causes: {NONDETERMINISM_CAUSES}.", worst, where)
