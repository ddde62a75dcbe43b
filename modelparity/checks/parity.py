"""One parity check: a model, a format, a batch size -> a verdict and a record for the reports.

The check never raises for a format's own failure (a converter crash, a runtime error, wrong
numbers): it returns an outcome the pytest layer turns into pass, fail, skip or warning.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelparity.checks.compare import Comparison, compare, uninformative_reasons
from modelparity.checks.noise_floor import NOISE_FACTOR, NoiseFloor, below_floor
from modelparity.checks.noise_floor import apply as apply_floor
from modelparity.checks.tolerance import Tolerance, ToleranceOverride, parse_overrides, resolve
from modelparity.diverge import Divergence, locate
from modelparity.execution import mismatches, torch_facts
from modelparity.execution import summary as execution_summary
from modelparity.formats.base import Format, NotApplicable
from modelparity.harness import BuildRecord, Harness, LoadedModel
from modelparity.machine import machine_info
from modelparity.repro import command
from modelparity.spec import ModelSpec
from modelparity.store import StoredBuildError

INPUT_SEED = 20261125


@dataclass
class Outcome:
    """status: passed, failed, skipped. `skip_kind` says why a skip: 'missing-backend',
    'not-applicable' or 'not-judged' (the model's reference failed its own check)."""

    status: str
    message: str = ""
    skip_kind: str | None = None
    warnings: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    tolerance_notes: list[str] = field(default_factory=list)  # tolerances raised to the noise floor


def tolerance_layers(model: LoadedModel, config_overrides: Sequence[ToleranceOverride]
                     ) -> list[ToleranceOverride]:
    """The model spec's overrides (matched on format and output) come before the project's."""
    entries = [{"match": f"*/{pattern}", **values} for pattern, values in model.spec.tolerances.items()]
    return parse_overrides(entries, f"model {model.spec.name!r} spec") + list(config_overrides)


def check_parity(harness: Harness, model: LoadedModel, format_id: str, batch: int,
                 overrides: Sequence[ToleranceOverride], strict_backends: bool = False) -> Outcome:
    """Build (or reuse) the format's artifact, run it on seeded inputs, compare with torch eager."""
    node = harness.graph.nodes[format_id]
    spec = model.spec
    record: dict[str, Any] = {
        "model": spec.name, "model_reference": model.reference, "format": format_id, "batch": batch,
        "chain": [{"id": n.id, "params": dict(n.params), "description": n.description}
                  for n in harness.graph.chain(format_id)],
        "precision_profile": node.precision, "builtin_model": spec.builtin,
        "model_identity": {k: model.identity[k] for k in ("weights", "code")},
    }
    stop = unavailable(harness, model, format_id, batch, strict_backends)
    if stop is not None:
        stop.record = record
        return stop

    build = BuildRecord()
    record["build"] = build.steps
    try:
        artifact = harness.artifact(model, format_id, build)
    except StoredBuildError as error:
        return build_failure(format_id, error, record)
    _record_build(record, build, artifact.path)

    fixed = fixed_shapes_reason(node, spec, batch)
    if fixed:
        return Outcome("skipped", fixed, "not-applicable", record=record)
    key = (batch,)
    if node.fixed_shapes:
        key, record["at_export_sizes"] = ("export",), True
    inputs = spec.inputs_for(check_sizes(spec, node, batch), seed=INPUT_SEED + batch)
    record["input_shapes"] = {k: list(v.shape) for k, v in inputs.items()}
    saved = harness.save_inputs(model, inputs, f"b{batch}")
    repro = ""
    if saved:
        record["inputs_file"] = str(saved)
        record["repro"] = command(model.reference, format_id, saved, harness.store.root,
                                  harness.graph.recipe)
        repro = f"\nreproduce on the saved inputs: {record['repro']}"
    reference = harness.reference_outputs(model, inputs, key)
    record["reference_facts"] = torch_facts("cpu")
    runner = None
    try:
        runner, load_seconds = harness.runner(model, format_id, artifact)
        started = time.perf_counter()
        with harness.clock("run"):
            actual = runner.run(inputs)
        record["run_seconds"] = round(time.perf_counter() - started, 4)
    except NotApplicable as reason:
        record["facts"] = runner.facts if runner is not None else {}
        return Outcome("skipped", f"not applicable: {reason}", "not-applicable", record=record)
    except Exception as error:
        record["error"] = {"kind": "runtime", "summary": f"{type(error).__name__}: {error}",
                           "tail": traceback.format_exc(limit=-3)}
        return Outcome("failed", f"{format_id} failed to run at shapes {record['input_shapes']}: "
                       f"{type(error).__name__}: {error}", record=record)
    record["load_seconds"] = round(load_seconds, 3)
    record["facts"] = runner.facts
    if runner.facts.get("note"):
        record["notes"].append(f"{format_id}: {runner.facts['note']}")
    ran_otherwise = mismatches(format_id, node.device, node.precision, runner.facts)
    if record["reference_facts"]["compute_precision"] != "f32":
        ran_otherwise.append(f"the reference itself (torch eager) computes float32 work in "
                             f"{record['reference_facts']['compute_precision']} "
                             f"({record['reference_facts']['compute_precision_source']}): call "
                             "torch.set_float32_matmul_precision('highest') before the checks")
    record["execution"] = {"declared": {"device": node.device, "precision": node.precision},
                           "ran": execution_summary(runner.facts), "mismatches": ran_otherwise}

    floors = harness.noise_floors(model, inputs, key)
    tolerance_for = effective_tolerance(harness, model, format_id, overrides, floors)
    with harness.clock("compare"):
        comparison = compare(reference, actual, tolerance_for, f"{format_id} vs torch",
                             spec.classifier_outputs, floors)
    record["comparison"] = comparison.to_dict()
    record["noise_floor"] = {name: floor.to_dict() for name, floor in floors.items()}
    record["noise_factor"] = NOISE_FACTOR
    if not math.isnan(comparison.worst_abs):  # inf: NaN/Inf where the reference has numbers
        record["worst_abs"] = comparison.worst_abs
    ratios = [o.noise_ratio for o in comparison.outputs if o.noise_ratio is not None]
    if ratios:
        record["noise_ratio"] = max(ratios)
    below = [f"output {o.name!r}: {o.tolerance.layers[-1]}" for o in comparison.outputs
             if below_floor(o.tolerance)]
    record["below_noise_floor"] = below
    # Warned only where a layer (the spec's, the project's) set atol below the floor: a profile
    # raised for a poorly conditioned model is the rule at work, recorded, not a mistake.
    layers = tolerance_layers(model, overrides)
    tightened = [f"{format_id} output {o.name!r}: {o.tolerance.layers[-1]}" for o in comparison.outputs
                 if below_floor(o.tolerance) and any(
                     "atol" in layer.values and layer.applies(spec.name, format_id, o.name, node.precision)
                     for layer in layers)]
    problems = _informative_problems(harness, model, tolerance_for, batch, reference)
    record["uninformative"] = problems
    if not comparison.passed:
        located = diverging_node(harness, model, format_id, inputs, comparison)
        record["divergence"] = located if isinstance(located, str) else located.to_dict()
        message = comparison.message()
        if not isinstance(located, str):
            message += "\n" + located.describe()
        message += "".join(f"\nalso, what ran differs from the declaration: {p}" for p in ran_otherwise)
        return Outcome("failed", message + repro, record=record)
    if ran_otherwise:
        return Outcome("failed", "what ran is not what the format declares, so its numbers are not "
                       "this format's:\n" + "\n".join(f"  {p}" for p in ran_otherwise)
                       + "\n" + comparison.message() + repro, record=record)
    if problems and (spec.builtin or harness.strict_informative):
        why = "a built-in model must be informative" if spec.builtin else "--strict-informative"
        return Outcome("failed", "vacuous: " + "\n".join(problems) + f"\n({why})", record=record)
    return Outcome("passed", comparison.message(), warnings=[f"vacuous check: {p}" for p in problems],
                   record=record,
                   tolerance_notes=tightened)


def check_sizes(spec: ModelSpec, node: Format, batch: int) -> dict[str, int]:
    """The axis sizes a check at `batch` feeds the format: `batch` on the batch axis; for a format
    with fixed shapes, the only sizes it was built for, the export's (its b1 check)."""
    if node.fixed_shapes:
        return spec.export_sizes()
    return {spec.batch_axis: batch} if spec.batch_axis else {}


def fixed_shapes_reason(node: Format, spec: ModelSpec, batch: int) -> str | None:
    """Why a check at `batch` does not apply to a format with fixed shapes (None where it does):
    such a format is checked where it was built, at the export's sizes, in its b1 check."""
    if not node.fixed_shapes or batch == 1:
        return None
    return (f"not applicable: {node.id} has fixed shapes by design ({node.fixed_shapes}); its b1 "
            f"check runs at the export's sizes {spec.export_sizes()}")


def compare_with_reference(harness: Harness, model: LoadedModel, format_id: str,
                           inputs: Mapping[str, Any], key: tuple[Any, ...], actual: Mapping[str, Any],
                           overrides: Sequence[ToleranceOverride], label: str = "") -> Comparison:
    """`actual` against torch eager on `inputs`, each output under its layered tolerance with the
    reference's noise floor (modelparity.checks.noise_floor), with error/noise ratios: the comparison
    every suite that judges a format against torch makes."""
    floors = harness.noise_floors(model, inputs, key)
    return compare(harness.reference_outputs(model, inputs, key), actual,
                   effective_tolerance(harness, model, format_id, overrides, floors),
                   label or f"{format_id} vs torch", model.spec.classifier_outputs, floors)


def effective_tolerance(harness: Harness, model: LoadedModel, format_id: str,
                        overrides: Sequence[ToleranceOverride], floors: Mapping[str, NoiseFloor]
                        ) -> Callable[[str], Tolerance]:
    """Output name -> the format's profile, layered, raised to the output's noise floor."""
    precision = harness.graph.nodes[format_id].precision
    layers = tolerance_layers(model, overrides)

    def tolerance_for(output: str) -> Tolerance:
        return apply_floor(resolve(precision, model.spec.name, format_id, output, layers),
                           floors.get(output))
    return tolerance_for


def diverging_node(harness: Harness, model: LoadedModel, format_id: str, inputs: dict[str, Any],
                   comparison: Comparison) -> Divergence | str:
    """Where an ONNX format's graph starts to differ, on the sample of the worst failing element (a
    diagnosis: it never changes the verdict, and its own failure is reported as text)."""
    failing_outputs = [o for o in comparison.outputs if not o.passed and o.elements]
    if not failing_outputs:
        return "no output to trace: the outputs differ in structure (names, shapes), not in values"
    failing = max(failing_outputs, key=lambda o: o.max_abs)
    dim = model.spec.batch_dim(failing.name)
    if dim is not None and failing.max_abs_index:
        inputs = model.spec.rows(inputs, [failing.max_abs_index[dim]])
    try:
        return locate(harness, model, format_id, inputs, failing.tolerance.absolute(0.0),
                      failing.tolerance.rtol)
    except Exception as error:  # onnx shape inference or ONNX Runtime refusing the exposed graph
        return f"the diverging-node finder could not run: {type(error).__name__}: {error}"


def build_failure(format_id: str, error: StoredBuildError, record: dict[str, Any]) -> Outcome:
    """A conversion that did not produce an artifact: failed, or not applicable when the builder
    said there is nothing to convert (formats.base.NotApplicable)."""
    record["error"] = error.details
    if error.details.get("kind") == "not-applicable":
        return Outcome("skipped", f"not applicable: {error.details['summary']}", "not-applicable",
                       record=record)
    return Outcome("failed", f"conversion failed for {format_id}: {error}", record=record)


def unavailable(harness: Harness, model: LoadedModel, format_id: str, batch: int,
                strict_backends: bool, against_torch: bool = True) -> Outcome | None:
    """Why this check cannot run here: a backend not installed, a format that does not apply, or
    (for a check `against_torch`) a reference that cannot judge it (modelparity.checks.reference)."""
    on_gpu = harness.graph.provider(format_id) != "cpu"
    problems = [p for r in harness.graph.requirements(format_id) if (p := r.problem()) is not None]
    if problems:
        message = "; ".join(problems)
        if strict_backends or (on_gpu and harness.require_gpu):
            return Outcome("failed", f"{'--strict-backends' if strict_backends else '--require-gpu'}: "
                                     f"{message}")
        return Outcome("skipped", message, "missing-backend")
    for node in harness.graph.chain(format_id):
        reason = node.applies(machine_info()) if node.applies else None
        if reason:
            if on_gpu and harness.require_gpu:
                return Outcome("failed", f"--require-gpu: {format_id} cannot run on this machine: {reason}")
            return Outcome("skipped", reason, "not-applicable")
    verdict = harness.reference_verdict(model) if against_torch else None
    if verdict is not None and verdict.problem:
        return Outcome("skipped", f"not judged: {verdict.problem}", "not-judged")
    if batch > 1 and model.spec.batch_axis is None:
        return Outcome("skipped", f"not applicable: model {model.spec.name!r} declares no batch axis",
                       "not-applicable")
    return None


def _record_build(record: dict[str, Any], build: BuildRecord, artifact: Path) -> None:
    record["build_seconds"] = round(build.built_seconds, 3)
    record["artifact"] = str(artifact)
    record["notes"] = [f"{s['node']}: {s['info']['note']}" for s in build.steps if s["info"].get("note")]
    exports = [s["info"] for s in build.steps if "opset" in s["info"]]
    if exports:
        record["opset"] = {"requested": exports[0]["opset_requested"], "actual": exports[0]["opset"]}


def _informative_problems(harness: Harness, model: LoadedModel,
                          tolerance_for: Callable[[str], Tolerance], batch: int,
                          reference: dict[str, Any]) -> list[str]:
    """Judge informativeness on several inputs (the batch itself, or a batch of 4 for batch 1), under
    the tolerance the comparison used."""
    spec = model.spec
    if batch == 1 and spec.batch_axis is not None:
        probe_batch = min(4, spec.axis_ranges[spec.batch_axis].max)
        inputs = spec.inputs_for({spec.batch_axis: probe_batch}, seed=INPUT_SEED + probe_batch)
        reference = harness.reference_outputs(model, inputs, (probe_batch,))
    return uninformative_reasons(reference, tolerance_for, spec.classifier_outputs)
