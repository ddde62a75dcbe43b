"""Dynamic axes: does a format keep each declared axis symbolic, and does it answer right at shapes
the export never saw?

Exports lose dynamic axes silently (a traced branch on a dimension, a shape baked into a Reshape, a
converter that fixes the batch), so a format is checked three ways: the shapes its artifact declares
(a declared dynamic axis must be symbolic there), its outputs at drawn shapes against torch eager
within its tolerance profile, and its output shapes against the relations the spec declares (an
output dim named by an axis has that axis's size). A format that declares fixed shapes
(`Format.fixed_shapes`) must instead refuse a shape other than the one it was built for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelparity.checks.parity import Outcome, build_failure, compare_with_reference, unavailable
from modelparity.checks.tolerance import ToleranceOverride
from modelparity.formats.base import NotApplicable
from modelparity.harness import BuildRecord, Harness, LoadedModel
from modelparity.store import StoredBuildError


@dataclass
class ShapeFailure:
    """One drawn example that failed, with what it takes to reproduce it."""

    sizes: dict[str, int]
    seed: int
    input_shapes: dict[str, list[int]]
    message: str

    def repro(self, model: str, format_id: str) -> str:
        return (f"model {model!r}, format {format_id!r}, axis sizes {self.sizes}, input shapes "
                f"{self.input_shapes}, value seed {self.seed}")


@dataclass
class DynamicSubject:
    """A format's runner, built once, checked at many drawn shapes."""

    harness: Harness
    model: LoadedModel
    format_id: str
    overrides: Sequence[ToleranceOverride]
    runner: Any = None
    failures: list[ShapeFailure] = field(default_factory=list)
    examples: int = 0

    @property
    def fixed_shapes(self) -> str | None:
        return self.harness.graph.nodes[self.format_id].fixed_shapes

    def axis_status(self) -> dict[str, dict[str, str]]:
        """Per declared axis, from the shapes the artifact declares for the inputs (and the outputs,
        where the format reports them): 'dynamic', 'static' (with where), or 'unknown'."""
        declared = self.runner.declared_shapes() if hasattr(self.runner, "declared_shapes") else None
        status: dict[str, dict[str, str]] = {}
        spec = self.model.spec
        for tensor, dims in spec.dynamic_axes.items():
            is_input = tensor in spec.example_inputs
            if not is_input and (declared is None or tensor not in declared):
                continue  # an output whose declared shape the format does not report
            kind = "input" if is_input else "output"
            for dim, axis in dims.items():
                if declared is None or tensor not in declared:
                    status.setdefault(axis, {"status": "unknown", "detail": "the format does not "
                                             "declare its input shapes"})
                elif declared[tensor][dim] is not None and status.get(axis, {}).get("status") != "static":
                    status[axis] = {"status": "static", "detail": f"{kind} {tensor!r} dim {dim} is fixed "
                                    f"at {declared[tensor][dim]} (declared {declared[tensor]})"}
                else:
                    status.setdefault(axis, {"status": "dynamic", "detail": f"{kind} {tensor!r} dim {dim} "
                                             "is symbolic"})
        return status

    def check(self, sizes: Mapping[str, int], seed: int) -> ShapeFailure | None:
        """Run at `sizes` (axis name -> size) with values from `seed`; None when everything matches."""
        self.examples += 1
        spec = self.model.spec
        inputs = spec.inputs_for(sizes, seed=seed)
        shapes = {k: list(v.shape) for k, v in inputs.items()}
        key = ("dynamic", tuple(sorted(sizes.items())), seed)
        try:
            actual = self.runner.run(inputs)
        except NotApplicable:
            raise  # the runtime cannot run here at all: not a failure at these shapes
        except Exception as error:
            return self._failed(sizes, seed, shapes, f"{self.format_id} failed to run at input shapes "
                                f"{shapes}: {type(error).__name__}: {str(error)[:800]}")
        problems = output_shape_problems(spec.dynamic_axes, spec.output_names, sizes, actual)
        if problems:
            return self._failed(sizes, seed, shapes, "; ".join(problems))
        comparison = compare_with_reference(self.harness, self.model, self.format_id, inputs, key, actual,
                                            self.overrides, f"{self.format_id} vs torch at {shapes}")
        if not comparison.passed:
            return self._failed(sizes, seed, shapes, comparison.message())
        return None

    def implicated_axes(self, failure: ShapeFailure) -> list[str]:
        """The axes that break it: those whose size, put back to the export's, makes the example pass
        (all of them when no single one does, e.g. an interaction)."""
        export = self.model.spec.export_sizes()
        implicated = [axis for axis, size in failure.sizes.items()
                      if size != export[axis] and self.check({**failure.sizes, axis: export[axis]},
                                                             failure.seed) is None]
        return implicated or list(failure.sizes)

    def rejects(self, sizes: Mapping[str, int]) -> str | None:
        """For a format declaring fixed shapes: None if it refuses `sizes`, else what went wrong."""
        inputs = self.model.spec.inputs_for(sizes, seed=0)
        shapes = {k: list(v.shape) for k, v in inputs.items()}
        try:
            self.runner.run(inputs)
        except NotApplicable:
            raise
        except Exception:
            return None
        return (f"{self.format_id} declares fixed shapes ({self.fixed_shapes}) but returned outputs "
                f"for input shapes {shapes} it was not built for, without an error: a caller gets "
                "answers the format never promised")

    def _failed(self, sizes: Mapping[str, int], seed: int, shapes: dict[str, list[int]],
                message: str) -> ShapeFailure:
        failure = ShapeFailure(dict(sizes), seed, shapes, message)
        self.failures.append(failure)
        return failure


def prepare(harness: Harness, model: LoadedModel, format_id: str, overrides: Sequence[ToleranceOverride],
            strict_backends: bool) -> DynamicSubject | Outcome:
    """The format's runner ready for drawn shapes, or the outcome that stops the check (skip/fail)."""
    stop = unavailable(harness, model, format_id, 1, strict_backends)
    if stop is not None:
        return stop
    try:
        artifact = harness.artifact(model, format_id, BuildRecord())
    except StoredBuildError as error:
        return build_failure(format_id, error, {})
    try:
        runner, _ = harness.runner(model, format_id, artifact)
    except Exception as error:
        return Outcome("failed", f"{format_id} failed to load: {type(error).__name__}: {error}")
    return DynamicSubject(harness, model, format_id, overrides, runner)


def output_shape_problems(dynamic_axes: Mapping[str, Mapping[int, str]], output_names: Sequence[str],
                          sizes: Mapping[str, int], actual: Mapping[str, Any]) -> list[str]:
    """Output dims the spec names by an axis must have that axis's size (batch in = batch out)."""
    problems = []
    for name in output_names:
        if name not in actual:
            continue
        shape = actual[name].shape
        for dim, axis in dynamic_axes.get(name, {}).items():
            if axis in sizes and (dim >= len(shape) or shape[dim] != sizes[axis]):
                problems.append(f"output {name!r} has shape {list(shape)}: dim {dim} should be "
                                f"{axis}={sizes[axis]}")
    return problems
