"""Tolerance profiles as data, layered: precision profile -> model spec -> project config.

The pass rule, used everywhere: an element passes when |out - ref| <= atol + rtol * |ref|
(numpy's allclose rule, the reference is always torch eager FP32); an output passes when every element
does (or, where a layer sets `max_mismatch`, all but that share of them: a quantised format whose
rare rounding flips are accepted, by name and with a reason), no NaN/Inf differs from the
reference, and, where the profile sets `min_top1`, the share of rows whose top-1 class agrees is at
least that.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class ToleranceConfigError(ValueError):
    """A tolerance override is malformed; the message names where it came from."""


@dataclass(frozen=True)
class Tolerance:
    """The bounds one output is checked against, and the layers that set them."""

    profile: str
    atol: float
    rtol: float
    min_top1: float | None = None
    max_mismatch: float = 0.0
    layers: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        top1 = f", top-1 >= {self.min_top1:.0%}" if self.min_top1 is not None else ""
        share = f", up to {self.max_mismatch:.2%} of elements outside" if self.max_mismatch else ""
        return f"{self.profile}: atol={self.atol:g}, rtol={self.rtol:g}{top1}{share}"

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "atol": self.atol, "rtol": self.rtol,
                "min_top1": self.min_top1, "max_mismatch": self.max_mismatch,
                "layers": list(self.layers)}


# Why these numbers (measured on the zoo, 2026-11-25): fp32 formats differ from eager only by
# operator order and fused kernels (at most 5e-5 on logits of spread 2), so 1e-4 absolute plus 1e-3
# relative still fails a single perturbed weight. fp16 has a 2^-11 relative step compounded over the
# layers (digits_cnn 2e-3, tiny_transformer 4e-3). bf16 has a 2^-8 step (digits_cnn 2e-2,
# tiny_transformer 5.7e-2). int8 is judged mainly by top-1 agreement; its element bound only catches
# gross errors. Models whose conditioning needs more say so in their spec, with the reason.
PROFILES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", atol=1e-4, rtol=1e-3, layers=("profile fp32",)),
    "fp16": Tolerance("fp16", atol=2e-2, rtol=1e-2, layers=("profile fp16",)),
    "bf16": Tolerance("bf16", atol=1e-1, rtol=5e-2, layers=("profile bf16",)),
    # TF32 (CUDA matmuls/convolutions on Ampere and later) rounds products to a 10-bit mantissa, like
    # FP16, with float32's range and float32 accumulation: the fp16 profile's bounds, not measured
    # on a GPU here (none was lent to this work); the first nightly run's numbers should replace it.
    "tf32": Tolerance("tf32", atol=2e-2, rtol=1e-2, layers=("profile tf32",)),
    "int8": Tolerance("int8", atol=1.0, rtol=0.2, min_top1=0.9, layers=("profile int8",)),
}

_FIELDS = {"atol", "rtol", "min_top1", "max_mismatch"}


@dataclass(frozen=True)
class ToleranceOverride:
    """One layer: `match` is `model/format/output` with shell globs (a missing part matches all)."""

    match: str
    values: Mapping[str, float]
    reason: str
    source: str

    def applies(self, model: str, format_id: str, output: str, profile: str) -> bool:
        parts = (self.match.split("/") + ["*", "*"])[:3]
        targets = (model, format_id, output)
        if parts[1].startswith("profile:"):
            return (fnmatch.fnmatchcase(model, parts[0]) and parts[1][8:] == profile
                    and fnmatch.fnmatchcase(output, parts[2]))
        return all(fnmatch.fnmatchcase(t, p) for t, p in zip(targets, parts, strict=True))


def parse_overrides(entries: Iterable[Mapping[str, Any]], source: str) -> list[ToleranceOverride]:
    """Read override tables; each needs `match`, at least one bound, and a written `reason`."""
    overrides = []
    for index, entry in enumerate(entries):
        where = f"{source}, tolerance entry {index + 1}"
        unknown = set(entry) - _FIELDS - {"match", "reason"}
        if unknown:
            raise ToleranceConfigError(f"{where}: unknown keys {sorted(unknown)}; "
                                       f"use match, reason and any of {sorted(_FIELDS)}")
        if "match" not in entry:
            raise ToleranceConfigError(f"{where}: missing 'match' (model/format/output globs)")
        if not str(entry.get("reason", "")).strip():
            raise ToleranceConfigError(f"{where} ({entry['match']}): every tolerance override needs "
                                       "a written 'reason'")
        values = {k: float(entry[k]) for k in _FIELDS if k in entry}
        if not values:
            raise ToleranceConfigError(f"{where}: set at least one of {sorted(_FIELDS)}")
        if not 0.0 <= values.get("max_mismatch", 0.0) < 1.0:
            raise ToleranceConfigError(f"{where}: max_mismatch is a share of elements, 0 <= it < 1 "
                                       f"(0.001 for one in a thousand), got {values['max_mismatch']}")
        overrides.append(ToleranceOverride(str(entry["match"]), values, str(entry["reason"]), source))
    return overrides


def resolve(profile: str, model: str, format_id: str, output: str,
            overrides: Iterable[ToleranceOverride]) -> Tolerance:
    """The tolerance for one output: the profile, then each matching override in order."""
    if profile not in PROFILES:
        raise ToleranceConfigError(f"unknown tolerance profile {profile!r}; known: {sorted(PROFILES)}")
    tolerance = PROFILES[profile]
    for override in overrides:
        if override.applies(model, format_id, output, profile):
            tolerance = replace(tolerance, **override.values, layers=tolerance.layers + (
                f"{override.source} [{override.match}] {override.values}: {override.reason}",))
    return tolerance
