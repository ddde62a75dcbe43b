"""OpenVINO IR, FP32 and FP16 (compress_to_fp16), converted from the primary ONNX file and straight
from the torch module, compiled on the CPU.

On CPUs with BF16 (AVX-512 BF16, AMX) OpenVINO's default inference precision is bf16, elsewhere f32:
the fp32 and fp16-IR formats set INFERENCE_PRECISION_HINT=f32 explicitly, and bf16 is its own format,
not applicable where the CPU lacks BF16. Every runner reports the precision OpenVINO actually used.
FP16 IR stores FP16 weights; the CPU plugin computes in the hinted precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.execution import precision_name
from modelparity.formats.base import OPENVINO, TORCH, Format, LoadContext
from modelparity.formats.onnx_export import PRIMARY_ONNX, dynamic_shapes
from modelparity.models import ModelArtifact

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def from_onnx(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import openvino as ov

    model = ov.convert_model(str(Path(source) / "model.onnx"))
    return _save(ov, model, Path(out), params)


def from_torch(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Through torch.export with the model's dynamic axes: OpenVINO's TorchScript-tracing route fails
    on modules with data-dependent fast paths (nn.TransformerEncoder: "Graphs differed across
    invocations")."""
    import openvino as ov
    import torch

    artifact = ModelArtifact(Path(model))
    meta = artifact.meta
    example = tuple(torch.from_numpy(v) for v in artifact.export_inputs().values())
    axes = {t: {int(d): a for d, a in dims.items()} for t, dims in meta["dynamic_axes"].items()}
    program = torch.export.export(artifact.load_module(), example,
                                  dynamic_shapes=dynamic_shapes(meta, axes))
    model = ov.convert_model(program)
    for ports, names in ((model.inputs, meta["inputs"]), (model.outputs, meta["outputs"])):
        for port, name in zip(ports, names, strict=True):
            port.get_tensor().set_names({name})
    return _save(ov, model, Path(out), params)


def _save(ov: Any, model: Any, out: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=params["compress_to_fp16"])
    return {"file": "model.xml", "compress_to_fp16": params["compress_to_fp16"],
            "openvino": ov.__version__,
            "input_shapes": {p.get_any_name(): str(p.get_partial_shape()) for p in model.inputs}}


class OpenVinoRunner:
    """compile_model on CPU with an explicit INFERENCE_PRECISION_HINT and the LATENCY performance
    hint (one stream: what a request-at-a-time service gets, and what benchmark_app -hint latency
    measures)."""

    runtime_modules = ("openvino",)

    def __init__(self, context: LoadContext) -> None:
        import openvino as ov

        core = ov.Core()
        hint = context.params.get("inference_precision")
        config = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_PRECISION_HINT": hint} if hint else {})
        self._compiled = core.compile_model(str(context.artifact / "model.xml"), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = context.output_names
        self._inputs = context.input_names
        used = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.facts = {"runtime": f"openvino {ov.__version__}", "device": "CPU", "provider": "CPU",
                      "precision_hint_requested": hint, "inference_precision": used.to_string(),
                      "performance_hint": str(self._compiled.get_property("PERFORMANCE_HINT")),
                      "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                      "devices": [str(d).split(".")[0]
                                  for d in self._compiled.get_property("EXECUTION_DEVICES")],
                      "compute_precision": precision_name(used),
                      "compute_precision_source": "OpenVINO compiled model's INFERENCE_PRECISION_HINT"}
        if hint:
            self.facts["requested"] = {"compute_precision": precision_name(hint)}

    def declared_shapes(self) -> dict[str, list[int | None]]:
        shapes = {}
        for names, ports in ((self._inputs, self._compiled.inputs), (self._outputs, self._compiled.outputs)):
            for name, port in zip(names, ports, strict=True):
                shapes[name] = [None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
        return shapes

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """infer() on inputs shared with OpenVINO (no copy), like benchmark_app's prepared tensors."""
        feeds = {name: np.ascontiguousarray(inputs[name]) for name in self._inputs}
        return functools.partial(self._request.infer, feeds, share_inputs=True, share_outputs=True)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.timed_call(inputs)()
        by_name = {port.get_any_name(): value for port, value in result.items()}
        ordered = list(result.values())
        return {name: np.array(by_name.get(name, ordered[i]), copy=True)
                for i, name in enumerate(self._outputs)}


def needs_bf16(machine: Mapping[str, Any]) -> str | None:
    if any(flag in machine.get("cpu_flags", []) for flag in BF16_FLAGS):
        return None
    return (f"not applicable: this CPU ({machine.get('cpu_model')}) has none of {BF16_FLAGS}, so "
            "OpenVINO cannot run bf16 here")


def _variants(parent: str | None, prefix: str, build: str, requires: tuple) -> list[Format]:
    nodes = []
    for ir, compress in (("fp32", False), ("fp16", True)):
        node_id = f"{prefix}-ir{ir}"
        nodes.append(Format(node_id, parent=parent, build=build, params={"compress_to_fp16": compress},
                            requires=requires, produces="openvino",
                            description=f"OpenVINO IR {ir.upper()}"))
        full = f"{parent}-{node_id}" if parent else node_id
        nodes.append(Format("cpu", parent=full, load=OpenVinoRunner, precision=ir,
                            params={"inference_precision": "f32"}, requires=requires,
                            description="OpenVINO CPU, inference precision f32"))
    nodes.append(Format("cpu-bf16", parent=f"{parent}-{prefix}-irfp32" if parent else f"{prefix}-irfp32",
                        load=OpenVinoRunner, precision="bf16", params={"inference_precision": "bf16"},
                        requires=requires, applies=needs_bf16,
                        description="OpenVINO CPU, inference precision bf16"))
    return nodes


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    nodes = _variants(None, "ov", "modelparity.formats.openvino:from_torch", (TORCH, OPENVINO))
    if PRIMARY_ONNX in graph:
        nodes += _variants(PRIMARY_ONNX, "ov", "modelparity.formats.openvino:from_onnx", (OPENVINO,))
    return nodes
