"""TFLite, run with the LiteRT interpreter: onnx2tf's float32/float16 files, and the seed's conversions
from the SavedModel with TFLiteConverter: dynamic-range INT8 (Optimize.DEFAULT) and full-integer INT8
calibrated on the model's calibration set (ModelSpec.calibration; digits_cnn: 64 training digits).

LiteRT runs in a worker process in parity and dynamic (isolate_runtime): its builtin int8 kernels
crash with SIGSEGV on resnet18's full-integer file, and a crash must fail one check, not the session.

A TFLite input whose signature fixes the batch is resized when the batch differs; where the
interpreter refuses, the check fails with its error (no silent pass). INT8 runs use the int8 profile:
top-1 agreement first, element-wise bounds only for gross errors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import ONNX, Format, LoadContext, Requirement
from modelparity.formats.layout import LAYOUT_FILE, Layout
from modelparity.formats.onnx2tf import ONNX2TF, TENSORFLOW
from modelparity.formats.onnx_export import PRIMARY_ONNX
from modelparity.models import ModelArtifact

LITERT = Requirement("ai_edge_litert", "pip install 'modelparity[tf]'")


def from_saved_model(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """TFLiteConverter.from_saved_model with Optimize.DEFAULT; with a representative data set when
    params['full_integer'] (int8 kernels only, int8 inputs and outputs)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(source)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    layout = Layout.load(Path(source))
    samples = ModelArtifact(Path(model)).calibration_samples() if params["full_integer"] else []
    if params["full_integer"]:
        converter.representative_dataset = lambda: (list(layout.to_artifact(s).values()) for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    (Path(out) / "model.tflite").write_bytes(converter.convert())
    shutil.copy(Path(source) / LAYOUT_FILE, Path(out) / LAYOUT_FILE)
    return {"file": "model.tflite", "tensorflow": tf.__version__, "calibration_samples": len(samples)}


class TFLiteRunner:
    """A .tflite file through the interpreter's tensor API (onnx2tf writes files without signatures).

    Tensors pair with the model's by name where the names match, otherwise in order. An input whose
    shape differs from the allocated one is resized where the file's shape signature allows it (-1);
    a file with a fixed shape refuses, and the check fails with that error instead of passing.
    int8 inputs are quantised and int8 outputs dequantised with the file's own scale and zero point.
    params["xnnpack"] False runs the builtin kernels without LiteRT's default XNNPACK delegate.
    """

    runtime_modules = ("ai_edge_litert.interpreter",)

    def __init__(self, context: LoadContext) -> None:
        from ai_edge_litert import interpreter as litert

        path = context.artifact / context.params.get("file", "model.tflite")
        xnnpack = context.params.get("xnnpack", True)
        resolver = (litert.OpResolverType.AUTO if xnnpack
                    else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._interpreter = litert.Interpreter(model_path=str(path), num_threads=os.cpu_count(),
                                               experimental_op_resolver_type=resolver)
        self._interpreter.allocate_tensors()
        self._layout = Layout.load(context.artifact)
        self._inputs = _pair(context.input_names, self._interpreter.get_input_details(),
                             self._layout.artifact_names("inputs"))
        self._outputs = _pair(context.output_names, self._interpreter.get_output_details(),
                              self._layout.artifact_names("outputs"))
        self.facts = {"runtime": f"ai_edge_litert {_version('ai-edge-litert')}", "file": path.name,
                      "layout": self._layout.summary(), "threads": os.cpu_count(),
                      "provider": "XNNPACK delegate (default)" if xnnpack else "builtin kernels",
                      "devices": ["CPU"], **delegation(self._interpreter, xnnpack),
                      "tensors": {name: {"tflite_name": d["name"], "dtype": np.dtype(d["dtype"]).name,
                                         "shape_signature": d["shape_signature"].tolist()}
                                  for name, d in {**self._inputs, **self._outputs}.items()}}

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return {name: self._layout.to_model_shape(name, [None if d == -1 else int(d)
                                                         for d in detail["shape_signature"]])
                for name, detail in self._inputs.items()}

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        """set_tensor, invoke, get_tensor: the interpreter's own round trip, on inputs already in the
        file's layout and dtype (and the interpreter resized to them)."""
        feeds = self._prepare(inputs)
        interpreter = self._interpreter
        slots = [(self._inputs[name]["index"], value) for name, value in feeds.items()]
        outputs = {name: detail["index"] for name, detail in self._outputs.items()}

        def call() -> dict[str, np.ndarray]:
            for index, value in slots:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return {name: interpreter.get_tensor(index) for name, index in outputs.items()}
        return call

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self.timed_call(inputs)()
        values = {name: _dequantize(value, self._outputs[name]) for name, value in raw.items()}
        return self._layout.from_artifact(values, keep_names=True)

    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs in the file's layout and dtype, the interpreter resized to their shapes."""
        feeds = self._layout.to_artifact(inputs, keep_names=True)
        resized = False
        for name, value in feeds.items():
            detail = self._inputs[name]
            if tuple(detail["shape"]) != value.shape:
                _check_resizable(detail, value.shape)
                self._interpreter.resize_tensor_input(detail["index"], value.shape, strict=True)
                resized = True
        if resized:
            self._interpreter.allocate_tensors()
            self._refresh_details()
        return {name: _quantize(value, self._inputs[name]) for name, value in feeds.items()}

    def _refresh_details(self) -> None:
        by_index = {d["index"]: d for d in (self._interpreter.get_input_details()
                                            + self._interpreter.get_output_details())}
        for table in (self._inputs, self._outputs):
            for name, detail in table.items():
                table[name] = by_index[detail["index"]]


def delegation(interpreter: Any, xnnpack: bool) -> dict[str, Any]:
    """Whether the XNNPACK delegate took any node: LiteRT lists a DELEGATE kernel per partition it
    handed to a delegate (the nodes it replaced are still listed, so only the kernels tell).

    XNNPACK taking nothing of a file it was offered (an integer-only graph it has no kernels for) is
    a fact about the file, recorded as a note: LiteRT's builtin kernels then ran it, and that is what
    the check judged. A file run without XNNPACK that reports a delegate is a mismatch."""
    kernels = sum(1 for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE")
    facts: dict[str, Any] = {"delegate": "XNNPACK" if kernels else "none", "delegate_kernels": kernels}
    if xnnpack and not kernels:
        facts["note"] = ("XNNPACK was offered and delegated no node of this file; LiteRT's builtin "
                         "kernels ran all of it")
    elif not xnnpack:
        facts["requested"] = {"delegate": "none"}
    return facts


def _pair(model_names: list[str], details: list[dict[str, Any]], artifact_names: list[str]
          ) -> dict[str, dict[str, Any]]:
    """The file's tensor detail for each of the model's tensors: by name if all match, else in order."""
    if len(details) != len(model_names):
        raise ValueError(f"the .tflite file has {len(details)} tensors ({[d['name'] for d in details]}) "
                         f"where the model has {len(model_names)} ({model_names})")
    by_name = {d["name"]: d for d in details}
    for candidates in (model_names, artifact_names):
        if candidates and all(n in by_name for n in candidates):
            return {m: by_name[n] for m, n in zip(model_names, candidates, strict=True)}
    return dict(zip(model_names, details, strict=True))


def _check_resizable(detail: Mapping[str, Any], shape: tuple[int, ...]) -> None:
    signature = detail["shape_signature"].tolist()
    fixed = [i for i, (s, n) in enumerate(zip(signature, shape, strict=True)) if s != -1 and s != n]
    if len(signature) != len(shape) or fixed:
        raise ValueError(f"the .tflite input {detail['name']!r} has a fixed shape {signature}; it cannot "
                         f"take shape {list(shape)} (dims {fixed} are static in the file)")


def _quantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0 or np.issubdtype(value.dtype, np.integer):
        return value.astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.round(value / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(value.dtype, np.integer) or scale == 0:
        return value
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _version(distribution: str) -> str:
    from modelparity.machine import distribution_version

    return distribution_version(distribution) or "unknown"


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    parent = f"{PRIMARY_ONNX}-onnx2tf"
    if parent not in graph:
        return []
    requires = (ONNX, TENSORFLOW, ONNX2TF, LITERT)
    build = "modelparity.formats.tflite:from_saved_model"
    files = [
        Format("tflite-fp32", parent=parent, load=TFLiteRunner, requires=requires, isolate_runtime=True,
               params={"file": "model_float32.tflite"}, description="onnx2tf's float32 .tflite"),
        Format("tflite-fp16", parent=parent, load=TFLiteRunner, requires=requires, precision="fp16",
               isolate_runtime=True, params={"file": "model_float16.tflite"},
               description="onnx2tf's float16 .tflite"),
        Format("tflite-drq", parent=parent, build=build, load=TFLiteRunner, requires=requires,
               params={"full_integer": False}, precision="int8", produces="tflite", isolate_runtime=True,
               description="TFLiteConverter.from_saved_model, Optimize.DEFAULT (dynamic-range INT8)"),
        Format("tflite-int8", parent=parent, build=build, load=TFLiteRunner, requires=requires,
               params={"full_integer": True}, precision="int8", produces="tflite", isolate_runtime=True,
               description="full-integer INT8, representative data from the model's calibration inputs"),
    ]
    return files + [without_xnnpack(node) for node in files]


def without_xnnpack(node: Format) -> Format:
    """The same .tflite run on LiteRT's builtin kernels, without the default XNNPACK delegate: the
    delegate changes both speed and numerics, and some files only run without it."""
    if node.build:  # the file is the built node's artifact: a runner-only child of it
        return Format("noxnnpack", parent=node.id, load=TFLiteRunner, requires=node.requires,
                      params={"xnnpack": False}, precision=node.precision, isolate_runtime=True,
                      description=f"{node.description}; builtin kernels, no XNNPACK")
    return Format(f"{node.name}-noxnnpack", parent=node.parent, load=TFLiteRunner, isolate_runtime=True,
                  requires=node.requires, params={**node.params, "xnnpack": False},
                  precision=node.precision, description=f"{node.description}; builtin kernels, no XNNPACK")
