"""Core ML: the torch.export program converted by coremltools to an ML program (.mlpackage), at
FLOAT32 and at FLOAT16 compute precision.

coremltools reads the export's dynamic dims from its range constraints and makes each a flexible
shape (a RangeDim over the dim's range): the spec's axes reach the file through the export, and the
runner checks they arrived. The target is iOS15, the oldest with ML programs: there the float
inputs and outputs stay float32 at FP16 compute (from iOS16 on, FP16 compute makes them FP16 too),
so the outputs compare with the reference's dtype; a model needing a newer op fails to convert,
with coremltools' own message. A size that must be a multiple of a step (step * a free dim in the
export) is an expression Core ML refuses, also in its own words.

Core ML predicts only on macOS (coremltools #2658). Elsewhere the runner checks the file's
interface against the spec without predicting (names, counts, shapes, flexible ranges, the compute
precision of its ops) and its run() raises NotApplicable: the check is then reported as not
applicable, having verified the conversion and the file.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import TORCH, Format, LoadContext, NotApplicable, Requirement
from modelparity.formats.torch_export import NODE, load_program
from modelparity.models import ModelArtifact

COREMLTOOLS = Requirement("coremltools", "pip install 'modelparity[edge]'")
PACKAGE = "model.mlpackage"
TARGET = "iOS15"
PRECISIONS = {"fp32": "FLOAT32", "fp16": "FLOAT16"}
UNBOUNDED = -1  # a sizeRange's upperBound with no limit
# numpy's dtype for a multiArray's: Core ML has no int64 (an int64 input of the export is INT32)
ARRAY_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "DOUBLE": np.float64, "INT32": np.int32,
                "INT8": np.int8}


def import_coremltools() -> Any:
    """coremltools without TensorFlow. Its import loads TensorFlow when installed (for its TF
    converters, unused here), and triton loaded after TensorFlow (torch._dynamo loads it: the next
    export or torchvision import in a conversion worker) crashes the process with SIGSEGV. A
    TensorFlow already imported is left as it is (a conversion worker's preload imports torch's
    compiler first for that reason: modelparity.isolate._preload)."""
    if "coremltools" in sys.modules or "tensorflow" in sys.modules:
        import coremltools

        return coremltools
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # its `import tensorflow` fails
    try:
        import coremltools
    finally:
        del sys.modules["tensorflow"]
    return coremltools


def convert(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """ct.convert of the saved export (in the ATEN dialect coremltools requires), the file's tensors
    named as the spec names them."""
    ct = import_coremltools()
    artifact = ModelArtifact(Path(model))
    artifact.custom_ops()  # registers the torch operators the saved program calls
    meta = artifact.meta
    program = load_program(Path(source)).run_decompositions({})
    mlmodel = ct.convert(program, convert_to="mlprogram",
                         compute_precision=getattr(ct.precision, PRECISIONS[params["precision"]]),
                         minimum_deployment_target=getattr(ct.target, TARGET),
                         inputs=[ct.TensorType(name=name) for name in meta["inputs"]],
                         outputs=[ct.TensorType(name=name) for name in meta["outputs"]],
                         package_dir=str(Path(out) / PACKAGE))
    spec = mlmodel.get_spec()
    return {"file": PACKAGE, "coremltools": ct.__version__, "deployment_target": TARGET,
            "specification_version": spec.specificationVersion,
            "flexible": {i.name: _ranges(i) for i in spec.description.input if _ranges(i)}}


def _ranges(feature: Any) -> dict[int, list[int]]:
    """The flexible dims of a multiArray feature: {dim: [lower, upper]} (upper -1: unbounded)."""
    array = feature.type.multiArrayType
    if array.WhichOneof("ShapeFlexibility") != "shapeRange":
        return {}
    return {d: [r.lowerBound, r.upperBound] for d, r in enumerate(array.shapeRange.sizeRanges)
            if r.lowerBound != r.upperBound}


def _array_dtype(feature: Any) -> str:
    from coremltools.proto import FeatureTypes_pb2

    return FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(feature.type.multiArrayType.dataType)


def ops_by_precision(spec: Any) -> dict[str, int]:
    """The main function's ops (not its constants) counted by their first output's dtype."""
    from coremltools.proto import MIL_pb2

    main = spec.mlProgram.functions["main"]
    operations = main.block_specializations[main.opset].operations
    return dict(Counter(MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)
                        for op in operations if op.type != "const" and op.outputs))


class SpecCheck:
    """The checks of a .mlpackage's interface against the spec; each failure names the file, the
    tensor and what differs."""

    def __init__(self, path: Path, spec: Any, artifact: ModelArtifact) -> None:
        self.path, self.spec = path, spec
        self.meta = artifact.meta
        self.shapes = {name: list(value.shape) for name, value in artifact.export_inputs().items()}

    def fail(self, tensor: str, problem: str) -> None:
        raise ValueError(f"{self.path}: {tensor}: {problem}")

    def run(self, precision: str) -> None:
        self.names("input", [i.name for i in self.spec.description.input], self.meta["inputs"])
        self.names("output", [o.name for o in self.spec.description.output], self.meta["outputs"])
        for feature in self.spec.description.input:
            self.shape(feature)
        self.precision(precision)

    def names(self, kind: str, found: list[str], expected: list[str]) -> None:
        if len(found) != len(expected):
            self.fail(f"{kind}s", f"the file has {len(found)} {kind}s {found} where the model has "
                                  f"{len(expected)} {expected}")
        for index, (name, wanted) in enumerate(zip(found, expected, strict=True)):
            if name != wanted:
                self.fail(f"{kind} {index}", f"named {name!r} in the file, {wanted!r} in the spec "
                                             f"(the file's {kind}s: {found})")

    def shape(self, feature: Any) -> None:
        """Fixed dims as exported; each dynamic axis of the spec flexible over at least its range."""
        name, default = feature.name, list(feature.type.multiArrayType.shape)
        exported, flexible = self.shapes[name], _ranges(feature)
        if len(default) != len(exported):
            self.fail(f"input {name!r}", f"rank {len(default)} in the file, {len(exported)} exported "
                                         f"(file shape {default}, export shape {exported})")
        axes = {int(d): a for d, a in self.meta["dynamic_axes"].get(name, {}).items()}
        for dim, size in enumerate(exported):
            if dim in axes:
                self.flexible(name, dim, axes[dim], flexible.get(dim))
            elif dim in flexible or default[dim] != size:
                self.fail(f"input {name!r}", f"dim {dim} is {flexible.get(dim, default[dim])} in the "
                                             f"file where the export fixes it at {size}")

    def flexible(self, name: str, dim: int, axis: str, found: list[int] | None) -> None:
        lo, hi, _ = self.meta["axis_ranges"][axis]
        if found is None:
            self.fail(f"input {name!r}", f"dim {dim} (axis {axis!r}, declared {lo}..{hi}) is frozen in "
                                         "the file: no flexible shape covers it")
        lower, upper = found
        if lower > lo or (upper != UNBOUNDED and upper < hi):
            self.fail(f"input {name!r}", f"dim {dim} (axis {axis!r}) is flexible over "
                                         f"{lower}..{'inf' if upper == UNBOUNDED else upper} in the "
                                         f"file, short of the declared {lo}..{hi}")

    def precision(self, precision: str) -> None:
        """FP16 ops in the FP16 program, none in the FP32 one (casts and constants aside)."""
        ops = ops_by_precision(self.spec)
        fp16 = ops.get("FLOAT16", 0)
        if precision == "fp32" and fp16:
            self.fail("ops", f"{fp16} ops compute in FLOAT16 in a program converted at FLOAT32 ({ops})")
        if precision == "fp16" and not fp16:
            self.fail("ops", f"no op computes in FLOAT16 in a program converted at FLOAT16 ({ops})")


class CoreMLRunner:
    """A .mlpackage: its interface checked against the spec on load; predicted on macOS only."""

    def __init__(self, context: LoadContext) -> None:
        if context.model is None:
            raise ValueError("the Core ML runner checks the file against the spec: it needs the root "
                             "artifact (LoadContext.model)")
        ct = import_coremltools()
        self._path = context.artifact / context.params.get("file", PACKAGE)
        self._macos = sys.platform == "darwin"
        self._model = ct.models.MLModel(str(self._path), skip_model_load=not self._macos,
                                        compute_units=ct.ComputeUnit.ALL)
        spec = self._model.get_spec()
        SpecCheck(self._path, spec, ModelArtifact(context.model)).run(context.params["precision"])
        self._inputs = {i.name: ARRAY_DTYPES.get(_array_dtype(i)) for i in spec.description.input}
        self._outputs = dict(zip(context.output_names, (o.name for o in spec.description.output),
                                 strict=True))
        self.facts = {
            "runtime": f"coremltools {ct.__version__}" + ("" if self._macos else
                                                          " (spec only: prediction needs macOS)"),
            "file": self._path.name, "provider": "Core ML (compute units ALL)" if self._macos else "none",
            "deployment_target": ct.target(spec.specificationVersion).name,
            "specification_version": spec.specificationVersion,
            "compute_precision": PRECISIONS[context.params["precision"]],
            "ops_by_precision": ops_by_precision(spec),
            "inputs": {i.name: {"shape": list(i.type.multiArrayType.shape), "dtype": _array_dtype(i),
                                "flexible": _ranges(i)} for i in spec.description.input},
            "outputs": {o.name: {"dtype": _array_dtype(o)} for o in spec.description.output}}

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return {name: [None if dim in info["flexible"] else size for dim, size in enumerate(info["shape"])]
                for name, info in self.facts["inputs"].items()}

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], dict[str, Any]]:
        """MLModel.predict on the inputs, named as the file names them (the spec's names) and in its
        dtypes."""
        if not self._macos:
            raise NotApplicable("Core ML predicts only on macOS (coremltools #2658); on this "
                                f"{sys.platform} the conversion and the file's interface were checked")
        feeds = {name: np.ascontiguousarray(inputs[name], dtype) for name, dtype in self._inputs.items()}
        model = self._model
        return lambda: model.predict(feeds)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self.timed_call(inputs)()
        return {name: np.asarray(raw[file_name]) for name, file_name in self._outputs.items()}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if NODE not in graph:
        raise KeyError(NODE)
    return [Format(f"coreml-{precision}", parent=NODE, build="modelparity.formats.coreml:convert",
                   load=CoreMLRunner, params={"precision": precision}, precision=precision,
                   requires=(TORCH, COREMLTOOLS), produces="mlpackage",
                   description=f"coremltools.convert of the torch.export program to an ML program "
                               f"({TARGET}), compute precision {PRECISIONS[precision]}")
            for precision in PRECISIONS]
