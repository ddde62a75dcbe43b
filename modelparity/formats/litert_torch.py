"""litert-torch (formerly ai-edge-torch): Google's converter from a PyTorch module straight to .tflite,
without ONNX or TensorFlow in between, and its PT2E dynamic-range INT8 variant.

litert-torch lives in an overlay environment (modelparity/litert_env.py); the conversion runs in a
worker process started with that environment's Python (litert_torch_worker.py), which loads the
root artifact's module and export inputs itself. The .tflite it writes is run in the main
environment with LiteRT's interpreter (TFLiteRunner), like every other .tflite. litert-torch keeps
the model's own layout (NCHW stays NCHW); layout.json says so and pairs the file's signature
tensors (args_0.., output_0..) with the model's names, in order.

Dynamic axes come from the spec (torch.export's dynamic_shapes, as in torch_export.py). Measured with
litert-torch 0.10.0 (2026-12-01): a graph without a reshape of a symbolic size (convolutions, a mean
over the spatial dims, linear layers) converts with its batch -1, and LiteRT runs the file at other
batches; a reshape of a dynamic size (torch.flatten in resnet18 and mobilenet_v3_small) fails to
convert, since litert-torch lowers aten.view through JAX, which needs concrete sizes ("Shapes must
be 1D sequences of concrete values of integer type"). That failure is the converter's, reported in
its words; a spec without dynamic axes gives a file that refuses any other shape.

Every node is a root: each file is converted from the module (the INT8 one too, not from the FP32
file), so a failure of one does not hide the others.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity import litert_env
from modelparity.formats.base import TORCH, EnvironmentRequirement, Format
from modelparity.formats.layout import Layout, describe_layout
from modelparity.formats.tflite import LITERT, TFLiteRunner
from modelparity.models import ModelArtifact
from modelparity.worker import Worker

WORKER = Path(__file__).with_name("litert_torch_worker.py")
FILE = "model.tflite"
LITERT_ENV = EnvironmentRequirement("litert-torch environment", litert_env.CREATE_COMMAND,
                                    litert_env.absent_reason)


class LiteRTTorchWorker(Worker):
    """A worker process in the litert-torch overlay (its typing-extensions shadows the main one's)."""

    def __init__(self, log: Path, timeout: float = 600) -> None:
        env = {**os.environ, "LITERT_TORCH_SHOW_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
        super().__init__([str(litert_env.env_python()), "-I", "-u", "-X", "faulthandler", str(WORKER)],
                         log, "litert-torch worker", timeout, env)


def convert(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """litert_torch.convert in the worker (a converter error fails the build in its own words);
    layout.json pairs the file's signature tensors with the model's."""
    worker = LiteRTTorchWorker(Path(out) / "worker.log")
    try:
        info = worker.request("convert", model=model, out=str(Path(out) / FILE),
                              quantization=params["quantization"], dynamic=params["dynamic"])
    finally:
        worker.close()
    layout = file_layout(Path(out) / FILE, ModelArtifact(Path(model)), info.pop("output_shapes"))
    layout.save(Path(out))
    return {**info, "file": FILE, "layout": layout.summary(), "environment": str(litert_env.env_dir())}


def file_layout(path: Path, artifact: ModelArtifact, output_shapes: Mapping[str, list[int]]) -> Layout:
    """The model's tensors against the file's serving_default signature: args_<i> is the i-th input,
    output_<i> the i-th output, each a tensor whose shape keeps the model's dim order."""
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_path=str(path))
    signature = interpreter._get_full_signature_list()["serving_default"]
    details = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
    names, shapes = {}, {}
    for kind in ("inputs", "outputs"):
        ordered = sorted(signature[kind].items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))
        names[kind] = [details[index]["name"] for _, index in ordered]
        shapes[kind] = {details[index]["name"]: [None if d == -1 else int(d)
                                                 for d in details[index]["shape_signature"]]
                        for _, index in ordered}
    model_shapes = {"inputs": {n: list(v.shape) for n, v in artifact.export_inputs().items()},
                    "outputs": dict(output_shapes)}
    return Layout(describe_layout(model_shapes, names, shapes, prefer_channels_last=False))


# Measured with litert-torch 0.10.0 (2026-12-01), see the module's docstring: with dynamic axes it
# converts none of the zoo's models (each reshapes its batch: torch.flatten, attention's view).
STATIC = ("litert-torch's dynamic_shapes cannot lower a reshape of a symbolic size (aten.view through "
          "JAX needs concrete sizes): converted at the export's sizes, as its README converts")


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    requires = (LITERT_ENV, TORCH, LITERT)
    build = "modelparity.formats.litert_torch:convert"
    # the worker script does the conversion: its source keys the artifacts beside the pins
    pins = f"{litert_env.pins_digest()}-{hashlib.sha256(WORKER.read_bytes()).hexdigest()[:16]}"
    return [
        Format("litert-torch", build=build, load=TFLiteRunner, requires=requires, produces="tflite",
               params={"pins": pins, "quantization": None, "dynamic": True}, isolate_runtime=True,
               description="litert_torch.convert(module, export inputs, the spec's dynamic axes)"
                           ".export, in its own environment; run with LiteRT"),
        Format("litert-torch-static", build=build, load=TFLiteRunner, requires=requires,
               produces="tflite", params={"pins": pins, "quantization": None, "dynamic": False},
               fixed_shapes=STATIC, isolate_runtime=True,
               description="litert_torch.convert(module, export inputs).export: every size fixed at "
                           "the export's; run with LiteRT"),
        Format("litert-torch-static-pt2e-drq", build=build, load=TFLiteRunner, requires=requires,
               produces="tflite", params={"pins": pins, "quantization": "pt2e-drq", "dynamic": False},
               precision="int8", fixed_shapes=STATIC, isolate_runtime=True,
               description="litert-torch's PT2E recipe: per-channel symmetric int8 weights, dynamic "
                           "int8 activations (dynamic range), at the export's sizes; run with LiteRT"),
    ]
