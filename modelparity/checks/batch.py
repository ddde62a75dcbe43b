"""Batch consistency: a format answers each sample the same whatever else is in the batch.

Needs no reference: row i of a batched run is compared with the run of row i alone, and a batch of
one sample repeated must answer the same for every row (each within the format's own tolerance).
It catches what a comparison at one batch size can miss: kernels tuned for one shape, a frozen
batch axis, and rows leaking into each other (statistics taken across the batch, a padded batch
whose padding is read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelparity.checks.compare import compare
from modelparity.checks.parity import (
    INPUT_SEED,
    Outcome,
    build_failure,
    effective_tolerance,
    fixed_shapes_reason,
    unavailable,
)
from modelparity.checks.tolerance import ToleranceOverride
from modelparity.formats.base import NotApplicable
from modelparity.harness import BuildRecord, Harness, LoadedModel
from modelparity.store import StoredBuildError

# Three rows: odd, and neither the export's batch (2) nor parity's (1 and 4), so a batch axis frozen
# at any of them, or a kernel tuned for even sizes, shows; and 5 runs per format stay cheap.
CONSISTENCY_BATCH = 3


def check_batch_consistency(harness: Harness, model: LoadedModel, format_id: str, batch: int,
                            overrides: Sequence[ToleranceOverride], strict_backends: bool = False
                            ) -> Outcome:
    """Run a batch of `batch` seeded samples, each sample alone, and one sample repeated `batch`
    times; the rows must agree within the format's tolerance."""
    spec = model.spec
    node = harness.graph.nodes[format_id]
    record: dict[str, Any] = {
        "model": spec.name, "model_reference": model.reference, "format": format_id, "batch": batch,
        "kind": "batch-consistency", "precision_profile": node.precision,
        "chain": [{"id": n.id, "params": dict(n.params)} for n in harness.graph.chain(format_id)]}
    stop = unavailable(harness, model, format_id, batch, strict_backends)
    if stop is None and (spec.batch_axis is None or not spec.axis_ranges[spec.batch_axis].allows(batch)):
        stop = Outcome("skipped", f"not applicable: model {spec.name!r} has no batch axis allowing "
                                  f"{batch}", "not-applicable")
    if stop is None and (fixed := fixed_shapes_reason(node, spec, batch)):
        stop = Outcome("skipped", fixed, "not-applicable")
    if stop is not None:
        stop.record = record
        return stop
    try:
        artifact = harness.artifact(model, format_id, BuildRecord())
    except StoredBuildError as error:
        return build_failure(format_id, error, record)
    batched_inputs = spec.inputs_for({spec.batch_axis: batch}, seed=INPUT_SEED + 7919 + batch)
    # the torch reference's own noise on these samples bounds what the rows may differ by, as in
    # every suite (a format cannot be asked to agree with itself better than torch does)
    tolerance_for = effective_tolerance(harness, model, format_id, overrides,
                                        harness.noise_floors(model, batched_inputs, ("batch", batch)))
    repeated_inputs = {name: _repeat(spec.rows(batched_inputs, [0]), name, spec.batch_dim(name), batch)
                       for name in batched_inputs}
    try:
        runner, _ = harness.runner(model, format_id, artifact)
        batched = runner.run(batched_inputs)
        singles = [runner.run(spec.rows(batched_inputs, [row])) for row in range(batch)]
        repeated = runner.run(repeated_inputs)
    except NotApplicable as reason:
        return Outcome("skipped", f"not applicable: {reason}", "not-applicable", record=record)
    except Exception as error:
        return Outcome("failed", f"{format_id} failed to run: {type(error).__name__}: {error}",
                       record=record)
    problems, rows = [], []
    for row in range(batch):
        comparison = compare(singles[row], _row_of(spec, batched, row, batch), tolerance_for,
                             f"{format_id}: row {row} of a batch of {batch} vs that sample alone")
        rows.append({"row": row, "against": "alone", "max_abs": comparison.worst_abs,
                     "passed": comparison.passed})
        if not comparison.passed:
            problems.append(comparison.message())
    first = _row_of(spec, repeated, 0, batch)
    for row in range(1, batch):
        comparison = compare(first, _row_of(spec, repeated, row, batch), tolerance_for,
                             f"{format_id}: row {row} vs row 0 of one sample repeated {batch} times")
        rows.append({"row": row, "against": "row 0, same sample", "max_abs": comparison.worst_abs,
                     "passed": comparison.passed})
        if not comparison.passed:
            problems.append(comparison.message())
    record["batch_rows"] = rows
    record["worst_abs"] = max(r["max_abs"] for r in rows)
    if problems:
        return Outcome("failed", "batch inconsistency: a sample's answer depends on the rest of its "
                                 "batch\n" + "\n".join(problems), record=record)
    return Outcome("passed", f"{2 * batch - 1} row comparisons within {node.precision}; worst max abs "
                             f"{record['worst_abs']:.3g}", record=record)


def _repeat(one: dict[str, np.ndarray], name: str, dim: int | None, times: int) -> np.ndarray:
    return one[name] if dim is None else np.ascontiguousarray(np.repeat(one[name], times, axis=dim))


def _row_of(spec: Any, outputs: dict[str, np.ndarray], row: int, batch: int) -> dict[str, np.ndarray]:
    """Row `row` of every output, kept as a batch of one. An output's batch dim is the one the spec
    declares, else its first dim when that has the batch's size; an output with neither is kept whole."""
    rows = {}
    for name, value in outputs.items():
        dim = spec.batch_dim(name)
        if dim is None and value.ndim and value.shape[0] == batch:
            dim = 0
        rows[name] = value if dim is None else np.ascontiguousarray(np.take(value, [row], axis=dim))
    return rows
