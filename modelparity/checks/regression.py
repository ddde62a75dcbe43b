"""One opset-regression check: a model and an ONNX-derived format, run on the baseline's inputs, compared
with the baseline (its own entry, or its family's at other opsets) and with the same chain at the
other selected opsets; its outputs are what --save-baseline writes.

Each comparison uses the format's tolerance profile (with the model's and project's overrides), as
parity does: a regression is a change larger than the format is allowed against torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.baseline import Baseline, family, write_arrays
from modelparity.checks.compare import Comparison, compare
from modelparity.checks.parity import Outcome, build_failure, effective_tolerance, unavailable
from modelparity.checks.tolerance import ToleranceOverride
from modelparity.harness import BuildRecord, Harness, LoadedModel
from modelparity.store import StoredBuildError

INPUT_SEED = 20261127


def regression_inputs(model: LoadedModel, baseline: Baseline | None) -> dict[str, np.ndarray] | None:
    """The baseline's inputs for the model (None when it has none), or a seeded batch of one."""
    spec = model.spec
    if baseline is not None:
        return baseline.inputs(spec.name)
    return spec.inputs_for({spec.batch_axis: 1} if spec.batch_axis else {}, seed=INPUT_SEED)


def _run(harness: Harness, model: LoadedModel, format_id: str, inputs: Mapping[str, np.ndarray]
         ) -> tuple[dict[str, np.ndarray], BuildRecord, Any]:
    build = BuildRecord()
    artifact = harness.artifact(model, format_id, build)
    runner, _ = harness.runner(model, format_id, artifact)
    return runner.run(inputs), build, runner


def check_regression(harness: Harness, model: LoadedModel, format_id: str, siblings: Sequence[str],
                     overrides: Sequence[ToleranceOverride], baseline: Baseline | None,
                     save_to: Path | None, strict_backends: bool) -> Outcome:
    spec = model.spec
    node = harness.graph.nodes[format_id]
    record: dict[str, Any] = {"model": spec.name, "format": format_id, "family": family(format_id),
                              "precision": node.precision, "comparisons": []}
    stop = unavailable(harness, model, format_id, 1, strict_backends, against_torch=False)
    if stop is not None:
        stop.record = record
        if save_to is not None and stop.status == "skipped":
            record["baseline_not_run"] = {"model": spec.name, "format": format_id, "reason": stop.message}
        return stop
    inputs = regression_inputs(model, baseline)
    if inputs is None:
        return Outcome("failed", f"baseline {baseline.name!r} ({baseline.directory}) has no inputs for "
                       f"model {spec.name!r}; save a baseline that includes it (--save-baseline)",
                       record=record)
    try:
        actual, build, runner = _run(harness, model, format_id, inputs)
    except StoredBuildError as error:
        return build_failure(format_id, error, record)
    except Exception as error:  # the runtime's own refusal, e.g. an opset it does not implement
        return Outcome("failed", f"{format_id} failed to run: {type(error).__name__}: {error}", record=record)
    export = next((s["info"] for s in build.steps if "opset" in s["info"]), {})
    record.update(opset=export.get("opset"), opset_requested=export.get("opset_requested"),
                  exporter=export.get("exporter"), runtime=str(runner.facts.get("runtime", "")),
                  chain=[n.id for n in harness.graph.chain(format_id)])

    tolerance_for = effective_tolerance(harness, model, format_id, overrides,
                                        harness.noise_floors(model, inputs, ("opset",)))

    comparisons: list[tuple[dict[str, Any], Comparison]] = []
    if baseline is not None:
        entries = baseline.entries_for(spec.name, format_id)
        not_run = baseline.not_run(spec.name, format_id)
        if not entries and not_run is not None:
            return Outcome("skipped", f"not in baseline {baseline.name!r}: where it was saved, {not_run}; "
                           "save a baseline on a machine that runs it to include it",
                           "not-applicable", record=record)
        if not entries:
            return Outcome("failed", f"baseline {baseline.name!r} ({baseline.directory}) has no entry for "
                           f"{spec.name} / {format_id} at any opset; save a baseline that includes it "
                           "(--save-baseline)", record=record)
        for entry in entries:
            against = {"against": "baseline", "baseline": baseline.name, "format": entry["format"],
                       "opset": entry["opset"], "runtime": entry["runtime"]}
            comparisons.append((against, compare(
                baseline.outputs(entry), actual, tolerance_for,
                f"{format_id} (opset {record['opset']}) vs baseline {baseline.name} {entry['format']} "
                f"(opset {entry['opset']}, {entry['runtime']})", spec.classifier_outputs)))
    for sibling in siblings:
        against = {"against": "opset", "format": sibling}
        try:
            other, other_build, _ = _run(harness, model, sibling, inputs)
        except Exception as error:  # noted, not judged: the sibling's own check reports it
            record["comparisons"].append({**against, "skipped": f"{type(error).__name__}: {error}"[:300]})
            continue
        other_opset = next((s["info"]["opset"] for s in other_build.steps if "opset" in s["info"]), None)
        comparisons.append(({**against, "opset": other_opset}, compare(
            other, actual, tolerance_for, f"{format_id} (opset {record['opset']}) vs {sibling} "
            f"(opset {other_opset})", spec.classifier_outputs)))
    for against, comparison in comparisons:
        record["comparisons"].append({**against, "passed": comparison.passed, "max_abs": {
            o.name: o.max_abs for o in comparison.outputs}, "structural": comparison.structural})
    if save_to is not None:
        record["baseline_entry"] = _save(save_to, model, format_id, actual, record, inputs)
    failed = [c.message() for _, c in comparisons if not c.passed]
    if failed:
        return Outcome("failed", "\n".join(failed), record=record)
    summary = "; ".join(f"vs {a.get('baseline', a['format'])} (opset {a['opset']}): max abs "
                        f"{c.worst_abs:.3g}" for a, c in comparisons)
    return Outcome("passed", summary or "no baseline and no other opset to compare with", record=record)


def _save(directory: Path, model: LoadedModel, format_id: str, outputs: Mapping[str, np.ndarray],
          record: Mapping[str, Any], inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write the outputs (and the model's inputs) and return the manifest entries describing them."""
    name = model.spec.name
    inputs_file = f"{name}/inputs.npz"
    outputs_file = f"{name}/{format_id}.npz"
    return {
        "inputs": {"file": inputs_file, "sha256": write_arrays(directory / inputs_file, inputs),
                   "shapes": {k: list(v.shape) for k, v in inputs.items()}},
        "entry": {"model": name, "format": format_id, "family": record["family"], "file": outputs_file,
                  "sha256": write_arrays(directory / outputs_file, outputs),
                  "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
                  **{k: record[k] for k in ("opset", "opset_requested", "exporter", "chain", "runtime",
                                            "precision")}},
    }
