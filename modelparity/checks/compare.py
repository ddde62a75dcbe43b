"""One comparison for every suite: structure first, then statistics, then a verdict a user can act on.

All statistics are computed in float64 after casting both sides up. Relative error divides by |ref|
(elements where ref == 0 are left out of max rel). See modelparity.checks.tolerance for the pass rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelparity.checks.noise_floor import NoiseFloor
from modelparity.checks.noise_floor import ratio as noise_ratio
from modelparity.checks.noise_floor import ratio_text as noise_ratio_text
from modelparity.checks.tolerance import Tolerance


class UninformativeReferenceWarning(UserWarning):
    """A user model's reference output cannot tell a right export from a wrong one."""


@dataclass
class OutputComparison:
    """Statistics of one named output, format against reference."""

    name: str
    tolerance: Tolerance
    problems: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    elements: int = 0
    max_abs: float = 0.0
    max_abs_index: tuple[int, ...] = ()
    ref_at_max_abs: float | None = 0.0  # None: not finite
    out_at_max_abs: float | None = 0.0
    max_rel: float = 0.0
    max_rel_index: tuple[int, ...] = ()
    mean_abs: float = 0.0
    p99_abs: float = 0.0
    cosine: float = 1.0
    snr_db: float | None = None  # None: no error at all
    out_of_tolerance: int = 0
    nonfinite_mismatch: int = 0
    required_atol: float = 0.0
    ref_abs_max: float = 0.0
    scale: float = 0.0  # RMS of the reference's finite elements: what relative bounds scale with
    range: float = 0.0  # max(max - min, max |ref|) of the reference: what an offset is measured in
    bias: float = 0.0  # |mean(out - ref)| / range
    gain: float | None = None  # least-squares slope of out on ref (centred); None: constant ref
    bound_abs: float = 0.0  # the element bound's absolute part for this output
    classifier_rows: int = 0
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    abs_error_histogram: list[int] = field(default_factory=list)
    noise_floor: float | None = None  # the reference's own noise (modelparity.checks.noise_floor)
    noise_ratio: float | None = None  # max_abs / noise_floor
    noise_text: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tolerance"] = self.tolerance.to_dict()
        data["passed"] = self.passed
        return data


@dataclass
class Comparison:
    """The verdict over all outputs; `message()` is the failure text."""

    label: str
    structural: list[str]
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return not self.structural and all(o.passed for o in self.outputs)

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=float("nan"))

    def message(self) -> str:
        lines = [f"{self.label}: {p}" for p in self.structural]
        for out in self.outputs:
            head = f"output {out.name!r} [{self.label}]"
            if out.elements == 0 and out.problems:
                lines += [f"{head}: {p}" for p in out.problems]
                continue
            status = "FAILED" if out.problems else "ok"
            lines.append(
                f"{head} {status}: {out.out_of_tolerance}/{out.elements} "
                f"({out.out_of_tolerance / max(out.elements, 1):.1%}) out of tolerance "
                f"({out.tolerance.describe(out.scale)}); "
                + (f"{out.nonfinite_mismatch} NaN/Inf where the reference is finite, the statistics "
                   f"after max abs over the {out.elements - out.nonfinite_mismatch} elements finite in "
                   "both; " if out.nonfinite_mismatch else "")
                + f"max abs {out.max_abs:.3g} at "
                f"{out.max_abs_index} (ref {_value_text(out.ref_at_max_abs)}, got "
                f"{_value_text(out.out_at_max_abs)}); max rel {out.max_rel:.3g} at {out.max_rel_index}; "
                f"mean abs {out.mean_abs:.3g}; cosine {out.cosine:.6f}; SNR {_snr_text(out.snr_db)}; "
                f"offset {out.bias:.3g} x range; gain {_gain_text(out.gain)}{_topk_text(out)}"
                + (f"; {out.noise_text}" if out.noise_text else "")
                + f"; would pass elementwise with atol>={out.required_atol:.3g}")
            lines += [f"    {p}" for p in out.problems if not p.startswith("elements out of")]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"structural": self.structural, "outputs": [o.to_dict() for o in self.outputs]}


def _value_text(value: float | None) -> str:
    return "NaN/Inf" if value is None else f"{value:.6g}"


def _gain_text(gain: float | None) -> str:
    return "n/a (constant reference)" if gain is None else f"{gain:.4f}"


def _snr_text(snr_db: float | None) -> str:
    return "exact" if snr_db is None else f"{snr_db:.1f} dB"


def _topk_text(out: OutputComparison) -> str:
    if out.top1_agreement is None:
        return ""
    return f"; top-1 agreement {out.top1_agreement:.1%}, top-5 {out.top5_agreement:.1%}"


def compare(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
            tolerance_for: Callable[[str], Tolerance], label: str,
            classifier_outputs: Sequence[str] | Mapping[str, int] = (),
            noise_floors: Mapping[str, NoiseFloor] | None = None) -> Comparison:
    """Compare `actual` against `reference`, output by output; with `noise_floors`, each output's
    error is also given as a multiple of the reference's own noise."""
    if not isinstance(actual, Mapping):
        return Comparison(label, [f"the format's runner returned a {type(actual).__name__}, not a dict "
                                  f"of output name -> array for {list(reference)}: its Runner.run "
                                  "must return one (modelparity.formats.base.Runner)"], [])
    structural = []
    missing = [n for n in reference if n not in actual]
    extra = [n for n in actual if n not in reference]
    if missing:
        structural.append(f"missing outputs {missing} (got {sorted(actual)})")
    if extra:
        structural.append(f"unexpected outputs {extra} (expected {list(reference)})")
    axes = class_axes(classifier_outputs)
    outputs = [_compare_output(name, np.asarray(reference[name]), np.asarray(actual[name]),
                               tolerance_for(name), axes.get(name))
               for name in reference if name in actual]
    for output in outputs if noise_floors is not None else ():
        floor = noise_floors.get(output.name)
        if output.elements and floor is not None:
            output.noise_floor = floor.value
            output.noise_ratio = noise_ratio(output.max_abs, floor)
            output.noise_text = noise_ratio_text(output.max_abs, floor)
    return Comparison(label, structural, outputs)


def class_axes(classifier_outputs: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """Output name -> its class axis: a mapping as given, a list of names with the last axis."""
    if isinstance(classifier_outputs, Mapping):
        return {str(k): int(v) for k, v in classifier_outputs.items()}
    return {name: -1 for name in classifier_outputs}


def _compare_output(name: str, ref: np.ndarray, out: np.ndarray, tol: Tolerance,
                    classifier_axis: int | None) -> OutputComparison:
    """One output under the pass rule (modelparity.checks.tolerance); `classifier_axis` is the class axis
    of a classifier output (top-1 agreement), None otherwise."""
    result = OutputComparison(name=name, tolerance=tol, shape=tuple(ref.shape))
    if out.shape != ref.shape:
        result.problems.append(f"shape {out.shape}, but the reference has {ref.shape}")
        return result
    if out.dtype != ref.dtype:
        result.problems.append(f"dtype {out.dtype}, but the reference has {ref.dtype} (values "
                               "compared below after casting both to float64)")
    exact = not np.issubdtype(ref.dtype, np.floating)
    r, o = ref.astype(np.float64), out.astype(np.float64)
    result.elements = int(r.size)
    if r.size == 0:
        return result
    r_finite, o_finite = np.isfinite(r), np.isfinite(o)
    nonfinite_mismatch = ~(r_finite & o_finite) & ~((r == o) | (np.isnan(r) & np.isnan(o)))
    result.nonfinite_mismatch = int(nonfinite_mismatch.sum())
    both = r_finite & o_finite
    o_rows = o  # with its NaN/Inf, for top-1
    r, o = np.where(both, r, 0.0), np.where(both, o, 0.0)
    diff = np.abs(o - r)
    result.scale, result.range = _scale_bias_gain(r[r_finite], r[r_finite])[:2]  # the reference's own
    result.bias, result.gain = _scale_bias_gain(r[both], o[both])[2:]
    absolute = 0.0 if exact else tol.absolute(result.scale)
    rtol = 0.0 if exact else tol.rtol
    result.bound_abs = absolute
    bound = absolute + rtol * np.abs(r)
    result.out_of_tolerance = int(((diff > bound) & both).sum()) + result.nonfinite_mismatch
    # a NaN/Inf where the reference has a number is the worst element there is
    flat = int(np.flatnonzero(nonfinite_mismatch)[0]) if result.nonfinite_mismatch else int(np.argmax(diff))
    result.max_abs = math.inf if result.nonfinite_mismatch else float(diff.flat[flat])
    result.max_abs_index = tuple(int(i) for i in np.unravel_index(flat, r.shape))
    result.ref_at_max_abs = _finite_or_none(ref.flat[flat])
    result.out_at_max_abs = _finite_or_none(out.flat[flat])
    rel = np.divide(diff, np.abs(r), out=np.zeros_like(diff), where=both & (r != 0))
    flat_rel = int(np.argmax(rel))
    result.max_rel = float(rel.flat[flat_rel])
    result.max_rel_index = tuple(int(i) for i in np.unravel_index(flat_rel, r.shape))
    result.mean_abs = float(diff[both].mean()) if both.any() else 0.0
    result.p99_abs = float(np.quantile(diff[both], 0.99)) if both.any() else 0.0
    result.required_atol = (math.inf if result.nonfinite_mismatch else
                            max(0.0, float(np.max(np.where(both, diff - rtol * np.abs(r), 0.0)))))
    result.cosine = _cosine(r[both], o[both])
    result.snr_db = signal_to_noise_db(r[both], o[both])
    result.ref_abs_max = float(np.abs(r).max())
    result.abs_error_histogram = _log_histogram(diff[both])
    if classifier_axis is not None and r.ndim >= 1 and r.shape[classifier_axis] >= 2:
        rows_r = np.moveaxis(r, classifier_axis, -1).reshape(-1, r.shape[classifier_axis])
        rows_o = np.moveaxis(o_rows, classifier_axis, -1).reshape(-1, r.shape[classifier_axis])
        answered = np.isfinite(rows_o).all(1)  # a row with NaN/Inf names no class
        rows_o = np.where(np.isfinite(rows_o), rows_o, 0.0)
        top1_r = rows_r.argmax(1)
        result.top1_agreement = float(((rows_o.argmax(1) == top1_r) & answered).mean())
        top5_o = np.argsort(-rows_o, axis=1)[:, :5]
        result.top5_agreement = float(((top5_o == top1_r[:, None]).any(1) & answered).mean())
        result.classifier_rows = int(rows_r.shape[0])
    if result.nonfinite_mismatch:
        bad = np.argwhere(nonfinite_mismatch)[0]
        result.problems.append(f"{result.nonfinite_mismatch} NaN/Inf not in the reference, first at "
                               f"{tuple(int(i) for i in bad)}")
    outside = result.out_of_tolerance - result.nonfinite_mismatch
    if outside > tol.max_mismatch * result.elements or (exact and outside):
        result.problems.append("elements out of tolerance" if not exact else
                               f"{outside} elements differ in an {ref.dtype} output, which must be exact")
    if not exact and result.max_abs > max(tol.atol, tol.noise_atol):
        result.problems += _gate_problems(result, tol)
    if tol.min_top1 is not None and result.top1_agreement is not None:
        rows = result.classifier_rows
        changed = round((1 - result.top1_agreement) * rows)
        chance = chance_of_at_least(changed, rows, 1 - tol.min_top1)
        if chance < TOP1_SIGNIFICANCE:
            result.problems.append(
                f"top-1 agreement {result.top1_agreement:.1%} ({changed} of {rows} rows changed) is "
                f"below the required {tol.min_top1:.0%}: a format within it changes that many with "
                f"probability {chance:.2g} < {TOP1_SIGNIFICANCE}")
    return result


def _gate_problems(result: OutputComparison, tol: Tolerance) -> list[str]:
    """The semantic gates: what a whole output must keep, relative to its own scale."""
    problems = []
    if result.cosine < tol.min_cosine:
        problems.append(f"cosine {result.cosine:.6f} is below {tol.min_cosine:g}: the output's "
                        "direction differs from the reference's")
    if result.snr_db is not None and result.snr_db < tol.min_snr_db:
        problems.append(f"SNR {result.snr_db:.1f} dB is below {tol.min_snr_db:g} dB: the error's "
                        "energy is too large a share of the output's")
    if result.bias > tol.max_bias:
        problems.append(f"mean error {result.bias:.3g} x range ({result.bias * result.range:.3g}) is "
                        f"above {tol.max_bias:g} x the output's range: the output is offset")
    if result.gain is not None and abs(result.gain - 1) > tol.max_gain_error:
        problems.append(f"gain {result.gain:.4f} (least-squares slope of output on reference) is "
                        f"off by more than {tol.max_gain_error:g}: the output is scaled wrong")
    return problems


def _finite_or_none(value: Any) -> float | None:
    """A value for the records: JSON has no NaN or Inf."""
    number = float(value)
    return number if math.isfinite(number) else None


# Top-1 agreement on a handful of rows is noise: at 4 rows and 90% required, one changed row (25%)
# happens to a format that changes exactly 10% of its answers with probability 0.34. So the minimum
# is tested, not compared: the check fails when a format whose true rate of changed top-1 answers
# were the allowed one would change at least as many rows with probability below 5% (one-sided
# binomial test). On many rows this tends to the plain comparison; on one row it cannot fail.
TOP1_SIGNIFICANCE = 0.05


def chance_of_at_least(changed: int, rows: int, allowed_rate: float) -> float:
    """P(X >= changed) for X ~ Binomial(rows, allowed_rate)."""
    return sum(math.comb(rows, k) * allowed_rate ** k * (1 - allowed_rate) ** (rows - k)
               for k in range(changed, rows + 1))


def signal_to_noise_db(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """10 log10(sum ref^2 / sum (out - ref)^2): how far the error sits below the signal (an FP32
    export ~130 dB, FP16 ~70 dB, INT8 ~30 dB); None when there is no error at all."""
    noise = float(np.sum((candidate - reference) ** 2))
    if noise == 0.0:
        return None
    signal = float(np.sum(reference ** 2))
    return 10 * math.log10(max(signal, 1e-300) / noise)  # a zero reference: very negative, finite


def _scale_bias_gain(ref: np.ndarray, out: np.ndarray) -> tuple[float, float, float, float | None]:
    """RMS, range (PSNR's: max(max - min, max |ref|)), offset as a share of the range, gain."""
    if ref.size == 0:
        return 0.0, 0.0, 0.0, None
    scale = float(np.sqrt(np.mean(ref ** 2)))
    span = max(float(ref.max() - ref.min()), float(np.abs(ref).max()))
    bias = abs(float(np.mean(out - ref))) / span if span > 0 else 0.0
    centred = ref - ref.mean()
    spread = float(centred @ centred)
    gain = float(centred @ (out - out.mean())) / spread if spread > 0 else None
    return scale, span, bias, gain


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


# Bucket edges for the error distribution in reports: 1e-9 .. 1e+1 by decades, plus zero.
HISTOGRAM_EDGES = [0.0] + [10.0 ** e for e in range(-9, 2)] + [np.inf]


def _log_histogram(values: np.ndarray) -> list[int]:
    counts, _ = np.histogram(values, bins=HISTOGRAM_EDGES)
    return [int(c) for c in counts]


def uninformative_reasons(reference: Mapping[str, np.ndarray], tolerance_for: Callable[[str], Tolerance],
                          classifier_outputs: Sequence[str] | Mapping[str, int] = ()) -> list[str]:
    """Why a check against this reference could not fail, with the figures; empty when it can.

    A check is informative when answers that ignore the input would fail it. Two such null answers
    are tried per output: the reference's mean everywhere, and (with two or more rows) every row's
    answer given to the next input. If either passes the tolerance, so would a broken export. A
    classifier output whose rows all share one top-1 class is uninformative too.
    """
    reasons = []
    for name, value in reference.items():
        ref = np.asarray(value)
        if ref.size == 0 or not np.issubdtype(ref.dtype, np.floating):
            continue
        tol = tolerance_for(name)
        nulls = {"the reference mean everywhere": np.full_like(ref, np.nanmean(ref))}
        if ref.ndim >= 1 and ref.shape[0] >= 2:
            nulls["each input's answer given to the next input"] = np.roll(ref, 1, axis=0)
        for label, null in nulls.items():
            verdict = _compare_output(name, ref, null, tol, None)
            if verdict.passed:
                reasons.append(
                    f"reference uninformative: output {name!r} would pass with {label} "
                    f"(spread {float(np.nanstd(ref)):.3g}, max |y| {float(np.nanmax(np.abs(ref))):.3g}, "
                    f"null answer's max abs error {verdict.max_abs:.3g} within {tol.describe()})")
        axis = class_axes(classifier_outputs).get(name)
        if axis is not None and ref.ndim >= 2 and ref.shape[axis] >= 2:
            top1 = np.moveaxis(ref, axis, -1).reshape(-1, ref.shape[axis]).argmax(1)
            if top1.size >= 2 and np.unique(top1).size == 1:
                reasons.append(f"reference uninformative: every one of {top1.size} input rows of "
                               f"output {name!r} has top-1 class {int(top1[0])}")
    return reasons
