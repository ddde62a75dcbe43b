"""The first diverging node: where in an ONNX graph a reduced-precision or optimised variant leaves
its FP32 reference.

Both graphs get every intermediate tensor added as a graph output, run on the same inputs with ONNX
Runtime's graph optimisations off (so each runs as written, and each tensor keeps its declared type),
and are matched by tensor name. Walking the candidate's nodes in topological order, the first node
whose output leaves tolerance is reported with its op type and the error of its inputs (before) and
of its output (after). Intermediates are judged against their own range (max |error| <= atol + rtol *
max |reference|): an element near zero in a tensor that spans +-100 carries the rounding of +-100, so
the element-wise rule of the outputs would flag every FP16 convolution.

Declared FP16 tensors are also where FP16 overflows: `overflows` names the tensors that are Inf/NaN
where the reference is finite. A runtime without FP16 kernels (ONNX Runtime's CPU provider) computes
them in FP32 and may return a finite output; a runtime that honours the file's types (CUDA, TensorRT)
returns the Inf.

Command: python -m modelparity.diverge reference.onnx candidate.onnx [--inputs inputs.npz]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OVERFLOWS_SHOWN = 5


@dataclass
class TensorError:
    """One tensor of both graphs: its error against the reference, relative to the reference's range."""

    name: str
    max_abs: float
    reference_range: float
    nonfinite: int
    within: bool

    def describe(self) -> str:
        share = self.max_abs / max(self.reference_range, 1e-30)
        text = (f"{self.name}: max |err| {self.max_abs:.3g} "
                f"({share:.2%} of its range {self.reference_range:.3g})")
        if self.nonfinite:
            text += f", {self.nonfinite} elements Inf/NaN where the reference is finite (error of the rest)"
        return text


@dataclass
class Divergence:
    """The first node whose output leaves tolerance (node None: every shared tensor stayed within)."""

    node: str | None
    op_type: str | None
    output: TensorError | None
    inputs: list[TensorError]
    compared: int
    overflows: list[TensorError] = field(default_factory=list)
    trail: list[TensorError] = field(default_factory=list)

    def describe(self) -> str:
        if self.node is None or self.output is None:
            text = (f"no diverging node: all {self.compared} tensors the two graphs share stay within "
                    "tolerance (the difference is outside the graphs compared, or in the final outputs' "
                    "element-wise rule)")
        else:
            before = "; ".join(e.describe() for e in self.inputs) or "graph inputs only"
            text = (f"first diverging node: {self.node} ({self.op_type}), output {self.output.describe()}\n"
                    f"  its inputs (before): {before}\n"
                    f"  ({self.compared} tensors compared by name in topological order)")
        if self.overflows:
            text += "\nFP16 overflow, first tensors that are Inf/NaN where FP32 is finite: " + ", ".join(
                f"{e.name} ({e.nonfinite} elements)" for e in self.overflows)
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expose_intermediates(model: Any) -> Any:
    """A copy of the onnx ModelProto with every node output whose type is known as a graph output."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in present and name in typed:
                value = onnx.ValueInfoProto()
                value.CopyFrom(typed[name])
                value.type.tensor_type.ClearField("shape")
                exposed.graph.output.append(value)
                present.add(name)
    return exposed


def intermediate_values(path: Path, inputs: Mapping[str, np.ndarray], libraries: Sequence[str] = ()
                        ) -> dict[str, np.ndarray]:
    """Every exposed tensor of the ONNX file at `path`, computed by ONNX Runtime with optimisations
    off (`libraries`: custom-op libraries the graph's custom operators need)."""
    import onnx
    import onnxruntime as ort

    model = expose_intermediates(onnx.load(str(path)))
    from modelparity.formats.onnxruntime import optimisation_level

    options = ort.SessionOptions()
    options.graph_optimization_level = optimisation_level("disabled")
    options.log_severity_level = 3
    for library in libraries:
        options.register_custom_ops_library(library)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def tensor_error(name: str, reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float
                 ) -> TensorError:
    ref = reference.astype(np.float64)
    got = candidate.astype(np.float64)
    finite = np.isfinite(got) & np.isfinite(ref)
    nonfinite = int((~np.isfinite(got) & np.isfinite(ref)).sum())
    diff = np.abs(got[finite] - ref[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    spread = float(np.abs(ref[np.isfinite(ref)]).max()) if np.isfinite(ref).any() else 0.0
    return TensorError(name, max_abs, spread, nonfinite,
                       within=nonfinite == 0 and max_abs <= atol + rtol * spread)


def _comparable(reference: np.ndarray | None, candidate: np.ndarray) -> bool:
    return (reference is not None and reference.shape == candidate.shape
            and np.issubdtype(reference.dtype, np.floating) and np.issubdtype(candidate.dtype, np.floating))


def first_divergence(reference: Path, candidate: Path, inputs: Mapping[str, np.ndarray],
                     atol: float, rtol: float, libraries: Sequence[str] = ()) -> Divergence:
    """Run both files on `inputs` and find the first node of `candidate` whose output leaves tolerance."""
    import onnx

    ref_values = intermediate_values(reference, inputs, libraries)
    got_values = intermediate_values(candidate, inputs, libraries)
    errors: dict[str, TensorError] = {}
    trail: list[TensorError] = []
    first: tuple[Any, TensorError] | None = None
    for node in onnx.load(str(candidate), load_external_data=False).graph.node:
        for name in node.output:
            if name in got_values and _comparable(ref_values.get(name), got_values[name]):
                errors[name] = tensor_error(name, ref_values[name], got_values[name], atol, rtol)
                trail.append(errors[name])
                if first is None and not errors[name].within:
                    first = (node, errors[name])
    overflows = [e for e in trail if e.nonfinite][:OVERFLOWS_SHOWN]
    if first is None:
        return Divergence(None, None, None, [], len(trail), overflows, trail)
    node, error = first
    before = [errors[name] for name in node.input if name in errors]
    return Divergence(node.name or error.name, node.op_type, error, before, len(trail), overflows, trail)


def locate(harness: Any, model: Any, format_id: str, inputs: Mapping[str, np.ndarray], atol: float,
           rtol: float) -> Divergence | str:
    """The first diverging node of an ONNX Runtime format against its chain's exported ONNX file, or
    why there is nothing to compare (a string). The candidate is the last ONNX file of the chain
    (FP16, INT8, fused); when that is the export itself, the graph ONNX Runtime optimised it into at the
    format's level. No divergence between the two means the difference starts in the export."""
    import tempfile

    import onnxruntime as ort

    from modelparity.custom_ops import onnxruntime_libraries
    from modelparity.formats.onnxruntime import OnnxRuntimeRunner, optimisation_level
    from modelparity.harness import BuildRecord
    from modelparity.models import ModelArtifact

    chain = harness.graph.chain(format_id)
    onnx_nodes = [n for n in chain if n.produces == "onnx"]
    if chain[-1].load is not OnnxRuntimeRunner or not onnx_nodes:
        return f"{format_id} is not an ONNX file run by ONNX Runtime: no graph to compare node by node"
    files = [harness.artifact(model, n.id, BuildRecord()).path / "model.onnx"
             for n in (onnx_nodes[0], onnx_nodes[-1])]
    level = chain[-1].params.get("level", "all")
    libraries = onnxruntime_libraries(ModelArtifact(model.artifact.path).custom_ops())
    if len(onnx_nodes) > 1:
        return first_divergence(files[0], files[1], inputs, atol, rtol, libraries)
    if level == "disabled":
        return f"{format_id} runs the exported file as written: the difference starts in the export"
    with tempfile.TemporaryDirectory(prefix="modelparity-diverge-") as scratch:
        optimised = Path(scratch) / "optimised.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = optimisation_level(level)
        options.optimized_model_filepath = str(optimised)
        for library in libraries:
            options.register_custom_ops_library(library)
        ort.InferenceSession(str(files[0]), options, providers=["CPUExecutionProvider"])
        return first_divergence(files[0], optimised, inputs, atol, rtol, libraries)


def random_inputs(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for the command line when none are given: standard normal floats, integers in {0, 1},
    symbolic dims at 1."""
    import onnx
    from onnx import helper

    rng = np.random.default_rng(seed)
    inputs = {}
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        inputs[value.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                              else rng.integers(0, 2, shape).astype(dtype))
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelparity.diverge",
        description="Find the first node where CANDIDATE (an FP16, INT8 or optimised ONNX file) leaves "
                    "REFERENCE (its FP32 ONNX). Exit status 1 when a node diverges.")
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--inputs", type=Path, help=".npz of named inputs (default: seeded random inputs, "
                                                     "symbolic dims at 1)")
    parser.add_argument("--atol", type=float, default=2e-2)
    parser.add_argument("--rtol", type=float, default=1e-2, help="share of each tensor's range allowed "
                                                                 "(default 1e-2: the fp16 profile)")
    parser.add_argument("--json", type=Path, help="also write the whole trail as JSON here")
    args = parser.parse_args(argv)
    for path in (args.reference, args.candidate, args.inputs):
        if path is not None and not path.is_file():
            parser.error(f"{path} does not exist; give an existing file")
    inputs = dict(np.load(args.inputs)) if args.inputs else random_inputs(args.reference)
    divergence = first_divergence(args.reference, args.candidate, inputs, args.atol, args.rtol)
    print(divergence.describe())
    if args.json:
        args.json.write_text(json.dumps(divergence.to_dict(), indent=1))
    return 0 if divergence.node is None else 1


if __name__ == "__main__":
    sys.exit(main())
