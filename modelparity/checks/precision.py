"""Precision drift: how many predictions a reduced-precision format changes, and how much accuracy it
loses, against torch eager FP32 on a whole data set rather than a few inputs.

With a labelled evaluation set (ModelSpec.evaluation; digits_cnn: the held-out split) the drift is
accuracy, its change in points, the share of changed top-1 predictions and which classes they moved
between. Without labels, it is top-1/top-5 agreement with FP32 on SAMPLES seeded inputs. Gates are
data (DriftGate per precision profile, overridable per model and format with a reason), and an
output with NaN/Inf where FP32 is finite fails whatever the gates say (FP16 overflow).
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from modelparity.checks.tolerance import PROFILES
from modelparity.diverge import Divergence, locate
from modelparity.spec import ModelSpec

SAMPLES = 256
SEED = 20261126
CHUNK = 32
# Samples the graphs are traced on (every intermediate tensor of two graphs is kept in memory).
TRACED = 4


@dataclass(frozen=True)
class DriftGate:
    """max_accuracy_drop: points of accuracy a format may lose (labelled sets); min_agreement: the
    share of top-1 predictions that must stay as FP32's."""

    max_accuracy_drop: float
    min_agreement: float
    source: str = "default"


GATES = {
    "fp16": DriftGate(0.5, 0.99),
    "bf16": DriftGate(1.0, 0.98),
    "int8": DriftGate(2.0, 0.90),
}


class DriftConfigError(ValueError):
    """A [[tool.modelparity.drift_gate]] entry is malformed."""


@dataclass(frozen=True)
class GateOverride:
    match: str
    values: dict[str, float]
    reason: str


def parse_gate_overrides(entries: Sequence[Mapping[str, Any]], where: str) -> list[GateOverride]:
    overrides = []
    for index, entry in enumerate(entries):
        unknown = set(entry) - {"match", "reason", "max_accuracy_drop", "min_agreement"}
        if "match" not in entry or not entry.get("reason") or unknown:
            raise DriftConfigError(
                f"{where}: drift_gate entry {index} needs 'match' ('model/format' glob), a 'reason', and "
                f"only max_accuracy_drop / min_agreement (unknown: {sorted(unknown)})")
        values = {k: float(v) for k, v in entry.items() if k in ("max_accuracy_drop", "min_agreement")}
        overrides.append(GateOverride(entry["match"], values, entry["reason"]))
    return overrides


def gate_for(profile: str, model: str, format_id: str, overrides: Sequence[GateOverride]) -> DriftGate:
    """The profile's gate, then every override matching 'model/format', later ones winning."""
    gate = GATES[profile]
    for override in overrides:
        if fnmatch.fnmatchcase(f"{model}/{format_id}", override.match):
            gate = replace(gate, **override.values, source=f"{override.match}: {override.reason}")
    return gate


def evaluation_set(spec: ModelSpec) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The spec's labelled set with its labels, or SAMPLES seeded inputs and no labels (one sample
    for a model without a batch axis)."""
    if spec.evaluation is not None:
        inputs, labels = spec.evaluation()
        return inputs, np.asarray(labels)
    if spec.batch_axis is None:
        return spec.inputs_for({}, seed=SEED), None
    return spec.inputs_for({spec.batch_axis: SAMPLES}, seed=SEED), None


def samples(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
    """How many samples `inputs` holds along the batch axis."""
    name = next(n for n in inputs if spec.batch_dim(n) is not None)
    return inputs[name].shape[spec.batch_dim(name)]


def run_in_chunks(run: Any, spec: ModelSpec, inputs: Mapping[str, np.ndarray],
                  fixed_batch: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Outputs of `run` over the whole set, in chunks along the batch axis (the batch range's maximum,
    at most CHUNK); a format that refuses the chunk's batch is run one sample at a time, and one
    declared fixed-shape at `fixed_batch`, its last chunk padded with its last sample (the padding's
    outputs dropped). Returns the outputs and the chunk size used."""
    if spec.batch_axis is None:
        return run(inputs), 1
    total = samples(spec, inputs)
    if fixed_batch is not None:
        parts = []
        for start in range(0, total, fixed_batch):
            rows = list(range(start, min(start + fixed_batch, total)))
            padded = run(spec.rows(inputs, rows + rows[-1:] * (fixed_batch - len(rows))))
            parts.append(spec.rows(padded, range(len(rows))))
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, fixed_batch
    chunk = min(CHUNK, spec.axis_ranges[spec.batch_axis].max, total)
    for size in dict.fromkeys((chunk, 1)):
        try:
            parts = [run(spec.rows(inputs, range(start, min(start + size, total))))
                     for start in range(0, total, size)]
        except Exception:
            if size == 1:
                raise
            continue
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, size
    raise AssertionError("unreachable")


@dataclass
class Drift:
    samples: int
    agreement: float
    top5_agreement: float
    changed: int
    confusion: list[tuple[int, int, int]]
    max_abs: float
    cosine: float
    accuracy_reference: float | None = None
    accuracy: float | None = None
    nonfinite: int = 0

    @property
    def accuracy_delta_points(self) -> float | None:
        if self.accuracy is None or self.accuracy_reference is None:
            return None
        return 100.0 * (self.accuracy - self.accuracy_reference)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "accuracy_delta_points": self.accuracy_delta_points}


def top1(scores: np.ndarray) -> np.ndarray:
    """The top-1 class of each sample (NaN never wins)."""
    return np.nan_to_num(scores.reshape(len(scores), -1).astype(np.float64), nan=-np.inf).argmax(1)


def measure_drift(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> Drift:
    """Drift of one classifier output (samples x classes) against FP32."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    got = candidate.reshape(len(candidate), -1).astype(np.float64)
    nonfinite = int((~np.isfinite(got) & np.isfinite(ref)).sum())
    ref_top1, got_top1 = top1(reference), top1(candidate)
    top5 = np.argsort(-ref, axis=1)[:, :5]
    changed = ref_top1 != got_top1
    finite = np.isfinite(got)
    diff = np.abs(np.where(finite, got, 0) - ref)
    cosine = float((ref * np.where(finite, got, 0)).sum()
                   / max(np.linalg.norm(ref) * np.linalg.norm(np.where(finite, got, 0)), 1e-30))
    drift = Drift(samples=len(ref), agreement=float(1 - changed.mean()),
                  top5_agreement=float((top5 == got_top1[:, None]).any(1).mean()),
                  changed=int(changed.sum()),
                  confusion=[(int(a), int(b), n) for (a, b), n in
                             Counter(zip(ref_top1[changed], got_top1[changed], strict=True))
                             .most_common(10)],
                  max_abs=float(diff.max()), cosine=cosine, nonfinite=nonfinite)
    if labels is not None:
        drift.accuracy_reference = float((ref_top1 == labels).mean())
        drift.accuracy = float((got_top1 == labels).mean())
    return drift


def judge(drift: Drift, gate: DriftGate, output: str) -> list[str]:
    """What is wrong with the drift, under the gate (empty when it passes)."""
    problems = []
    if drift.nonfinite:
        problems.append(f"output {output!r}: {drift.nonfinite} elements are NaN/Inf where FP32 is finite "
                        "(FP16 overflow?)")
    if drift.agreement < gate.min_agreement:
        problems.append(f"output {output!r}: top-1 agreement with FP32 {drift.agreement:.2%} "
                        f"({drift.changed}/{drift.samples} predictions changed) < {gate.min_agreement:.2%}")
    delta = drift.accuracy_delta_points
    if delta is not None and -delta > gate.max_accuracy_drop:
        problems.append(f"output {output!r}: accuracy {drift.accuracy:.2%} vs FP32 "
                        f"{drift.accuracy_reference:.2%}: {-delta:.2f} points lost > "
                        f"{gate.max_accuracy_drop:g}")
    return problems


def trace(harness: Any, model: Any, format_id: str, inputs: Mapping[str, np.ndarray],
          changed: np.ndarray) -> tuple[Divergence | str, list[str]]:
    """The first diverging node of an ONNX format on up to TRACED changed samples (else the first
    ones), and the FP16 overflow it shows: a tensor the file stores as Inf/NaN where FP32 is finite
    fails even where this runtime computed it in FP32 and returned a finite output (ONNX Runtime's
    CPU provider does), because a runtime with FP16 kernels (CUDA, TensorRT) returns the Inf."""
    spec = model.spec
    rows = (np.flatnonzero(changed) if changed.any() else np.arange(len(changed)))[:TRACED]
    selected = spec.rows(inputs, rows)
    tolerance = PROFILES[harness.graph.nodes[format_id].precision]
    try:
        located = locate(harness, model, format_id, selected, tolerance.absolute(0.0), tolerance.rtol)
    except Exception as error:  # onnx shape inference or ONNX Runtime refusing the exposed graph
        return f"the diverging-node finder could not run: {type(error).__name__}: {error}", []
    if isinstance(located, str) or not located.overflows:
        return located, []
    names = ", ".join(f"{e.name} ({e.nonfinite} elements)" for e in located.overflows)
    return located, [f"FP16 overflow: tensors Inf/NaN where FP32 is finite, first {names}, on samples "
                     f"{rows.tolist()}; the output here may be finite only because this runtime computed "
                     "them in FP32: a runtime with FP16 kernels (CUDA, TensorRT) returns Inf"]


def describe(drift: Drift) -> str:
    text = (f"{drift.samples} samples: top-1 agreement {drift.agreement:.2%}, "
            f"top-5 {drift.top5_agreement:.2%}, {drift.changed} changed, max abs {drift.max_abs:.3g}, "
            f"cosine {drift.cosine:.6f}")
    if drift.accuracy is not None:
        text += (f"; accuracy {drift.accuracy:.2%} vs FP32 {drift.accuracy_reference:.2%} "
                 f"({drift.accuracy_delta_points:+.2f} points)")
    if drift.confusion:
        text += "; changed (FP32 -> format, count): " + ", ".join(
            f"{a}->{b} x{n}" for a, b, n in drift.confusion)
    return text

