"""The reference's own numerical noise, and the tolerance rule built on it.

torch eager in float32 is not exact: it differs from the same model in float64 by an amount set by
the model's conditioning (deep stacks, softmax over large logits, normalisation of small variances),
and a little across thread counts (reductions split differently). No export can be expected to be
closer to the float32 reference than that, so a tolerance below it fails clean formats for reasons
that have nothing to do with the format.

The noise floor of an output is the largest of, per element over the check's own inputs:
  |eager float32 - eager float64|  and  |eager float32 (default threads) - eager float32 (1 thread)|.
The absolute part of every element bound is at least NOISE_FACTOR x floor (modelparity.checks.tolerance):
the profile (and the model's and project's layers) decide, unless they ask for less than the
reference can give; and within that bound the semantic gates (cosine, SNR, bias, gain) are not
applied, since the difference is the reference's own noise. A format's
error is reported as a multiple of the floor ("3.1x noise": the format adds little beyond the model's
own conditioning; "4000x noise": the format adds error of its own).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.checks.tolerance import Tolerance

# Why 10: an export re-orders and fuses operations, which changes rounding by about as much as the
# float32 reference's own distance from float64 (measured on the zoo: FP32 ONNX formats sit at
# 0.3-30x the floor). Ten times the floor leaves room for that re-ordering and still fails any
# error a format adds of its own (a perturbed weight sits at 10^4-10^6x).
NOISE_FACTOR = 10.0


@dataclass(frozen=True)
class NoiseFloor:
    """One output's floor and where each part of it comes from (None: that part could not run)."""

    output: str
    float64_abs: float | None
    threads_abs: float | None
    source: str = "measured"
    note: str = ""

    @property
    def value(self) -> float:
        parts = [p for p in (self.float64_abs, self.threads_abs) if p is not None]
        return max(parts, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value}


def measure(module: Any, inputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            output_names: list[str], float64_module: Callable[[], Any] | None = None
            ) -> dict[str, NoiseFloor]:
    """Floors for every floating output of `reference` (torch eager float32 on `inputs`).

    `float64_module()` returns a float64 copy of `module` (the caller may keep one across checks;
    made here when not given). A model that cannot run in float64 (a kernel without a double
    implementation, a tensor created as float32 inside forward) keeps the thread part alone, with
    the reason in `note`.
    """
    import torch

    from modelparity.formats.torchscript import as_named_outputs

    wide, note = None, ""
    try:
        double = float64_module() if float64_module is not None else float64_copy(module)
        with torch.no_grad():
            result = double(*[torch.from_numpy(_widen(v)) for v in inputs.values()])
        wide = as_named_outputs(result, output_names)
    except Exception as error:  # the user's model decides what float64 does; report, never raise
        note = f"float64 run failed ({type(error).__name__}: {str(error)[:200]}); floor from threads only"
    threaded = _one_thread(module, inputs, output_names)
    floors = {}
    for name, ref in reference.items():
        if not np.issubdtype(ref.dtype, np.floating):
            continue
        floors[name] = NoiseFloor(name, _max_abs(ref, wide.get(name) if wide else None),
                                  _max_abs(ref, threaded.get(name) if threaded else None), note=note)
    return floors


def float64_copy(module: Any) -> Any:
    return copy.deepcopy(module).double().eval()


def _widen(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value


def _one_thread(module: Any, inputs: Mapping[str, np.ndarray], output_names: list[str]
                ) -> dict[str, np.ndarray] | None:
    """The float32 outputs with torch on one thread (None when it already runs on one)."""
    import torch

    from modelparity.formats.torchscript import as_named_outputs

    threads = torch.get_num_threads()
    if threads == 1:
        return None
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return as_named_outputs(module(*[torch.from_numpy(v) for v in inputs.values()]),
                                    output_names)
    finally:
        torch.set_num_threads(threads)


def _max_abs(reference: np.ndarray, other: np.ndarray | None) -> float | None:
    if other is None or other.shape != reference.shape:
        return None
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    finite = np.isfinite(diff)
    return float(diff[finite].max()) if finite.any() else None


def apply(tolerance: Tolerance, floor: NoiseFloor | None) -> Tolerance:
    """The effective tolerance: its absolute bound never below NOISE_FACTOR x floor. Where a layer
    set an atol below that, the raise is recorded as a layer of its own (what the report shows as
    'below the noise floor')."""
    if floor is None:
        return tolerance
    raised = NOISE_FACTOR * floor.value
    effective = replace(tolerance, noise_atol=raised)
    if 0 < tolerance.atol < raised:
        effective = replace(effective, layers=tolerance.layers + (
            f"noise floor: atol {tolerance.atol:g} is below {NOISE_FACTOR:g} x the reference's own "
            f"noise ({floor.value:.3g}, {floor.source}), raised to {raised:.3g}",))
    return effective


def below_floor(tolerance: Tolerance) -> bool:
    return any(layer.startswith("noise floor:") for layer in tolerance.layers)


def ratio(max_abs: float, floor: NoiseFloor | None) -> float | None:
    """How many floors the observed error is (None: no floor, or a floor of exactly 0)."""
    if floor is None or floor.value == 0.0:
        return None
    return max_abs / floor.value


def ratio_text(max_abs: float, floor: NoiseFloor | None) -> str:
    if floor is None:
        return "no noise floor (not a floating output)"
    value = ratio(max_abs, floor)
    if value is None:
        return "noise floor 0 (float64 agrees exactly)"
    return f"{_times(value)} noise (floor {floor.value:.2g})"


def _times(value: float) -> str:
    if not math.isfinite(value):
        return "inf x"
    return f"{value:.2g}x" if value < 10 else f"{value:,.0f}x"


class FloorFile:
    """Floors a user committed (`--calibrate` writes them): model -> batch -> output -> floor, each
    model's entry tagged with the identity of the weights and code it was measured on (a changed
    model measures again rather than use a stale floor)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def lookup(self, model: str, identity: Mapping[str, Any], batch: int) -> dict[str, NoiseFloor] | None:
        entry = self.data.get("models", {}).get(model)
        if not entry or entry.get("identity") != _identity_key(identity):
            return None
        outputs = entry.get("batches", {}).get(str(batch))
        if outputs is None:
            return None
        return {name: NoiseFloor(name, v.get("float64_abs"), v.get("threads_abs"),
                                 source=f"calibrated ({self.path.name})", note=v.get("note", ""))
                for name, v in outputs.items()}

    def record(self, model: str, identity: Mapping[str, Any], batch: int,
               floors: Mapping[str, NoiseFloor], machine: Mapping[str, Any]) -> None:
        models = self.data.setdefault("models", {})
        entry = models.setdefault(model, {})
        if entry.get("identity") != _identity_key(identity):
            entry.clear()
            entry["identity"] = _identity_key(identity)
        entry["cpu"] = machine.get("cpu_model")
        entry.setdefault("batches", {})[str(batch)] = {
            name: {"float64_abs": f.float64_abs, "threads_abs": f.threads_abs, "note": f.note}
            for name, f in floors.items()}

    def save(self) -> None:
        self.data["about"] = ("torch eager float32 vs float64 (and 1 thread) per output, max abs over the "
                              f"parity check's seeded inputs; tolerance atol >= {NOISE_FACTOR:g} x floor. "
                              "Written by `pytest suites/parity --calibrate`; review, then commit.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def _identity_key(identity: Mapping[str, Any]) -> str:
    return f"{identity.get('weights')}:{identity.get('code')}"
