"""onnx2tf (the maintained ONNX -> TensorFlow converter): a TF SavedModel run with TensorFlow, and the
float32/float16 .tflite files it writes beside it, run with LiteRT (see tflite.py).

onnx2tf makes inputs of rank >= 3 channels-last (NHWC) and names outputs output_0, output_1...; the
build records the real layout in layout.json (shown in the report) and the runners undo it.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import ONNX, Format, LoadContext, Requirement
from modelparity.formats.layout import Layout, describe_layout, onnx_shapes
from modelparity.formats.onnx_export import PRIMARY_ONNX

TENSORFLOW = Requirement("tensorflow", "pip install 'modelparity[tf]'")
ONNX2TF = Requirement("onnx2tf", "pip install 'modelparity[tf]'")
SIGNATURE = "serving_default"


def convert(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import onnx2tf
    import tensorflow as tf

    # onnx2tf rewrites the file it converts (shape inference through onnx-graphsurgeon, which drops
    # custom-op domains): it gets a copy, never the parent artifact.
    # (named model.onnx still: onnx2tf names the .tflite files after it)
    with tempfile.TemporaryDirectory(prefix="modelparity-onnx2tf-") as scratch:
        onnx_file = Path(scratch) / "model.onnx"
        shutil.copyfile(Path(source) / "model.onnx", onnx_file)
        onnx2tf.convert(input_onnx_file_path=str(onnx_file), output_folder_path=out,
                        output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                        non_verbose=True)
    signature = tf.saved_model.load(out).signatures[SIGNATURE]
    _, tf_inputs = signature.structured_input_signature
    tf_outputs = signature.structured_outputs
    model_shapes = onnx_shapes(Path(source) / "model.onnx")
    output_names = sorted(tf_outputs, key=lambda name: int(name.rsplit("_", 1)[-1]))
    layout = describe_layout(
        model_shapes,
        {"inputs": list(model_shapes["inputs"]), "outputs": output_names},
        {"inputs": {n: spec.shape.as_list() for n, spec in tf_inputs.items()},
         "outputs": {n: spec.shape.as_list() for n, spec in tf_outputs.items()}})
    Layout(layout).save(Path(out))
    tflite = sorted(p.name for p in Path(out).glob("*.tflite"))
    return {"tensorflow": tf.__version__, "onnx2tf": onnx2tf.__version__, "tflite_files": tflite,
            "layout": Layout(layout).summary()}


class SavedModelRunner:
    """The SavedModel's serving signature, called with the model's arrays in the artifact's layout."""

    # torch's compiler before TensorFlow, in this order: triton (torch._dynamo loads it) loaded after
    # TensorFlow crashes the process (SIGSEGV; measured in the memory probe's child), and the
    # torch.export and AOTInductor runners load it in the same process later (the conversion
    # workers do the same: modelparity.isolate._preload)
    runtime_modules = ("torch._dynamo", "tensorflow")

    def __init__(self, context: LoadContext) -> None:
        if "tensorflow" not in sys.modules:  # too late otherwise: importing it now would crash
            import torch._dynamo  # noqa: F401
        import tensorflow as tf

        self._tf = tf
        self._layout = Layout.load(context.artifact)
        self._signature = tf.saved_model.load(str(context.artifact)).signatures[SIGNATURE]
        self.facts = {"runtime": f"tensorflow {tf.__version__}", "signature": SIGNATURE,
                      "provider": "CPU", "threads": "runtime default",
                      "layout": self._layout.summary(),
                      "devices": sorted({d.device_type for d in tf.config.list_logical_devices()
                                         if d.device_type in ("CPU", "GPU")}),
                      "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled()}

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return self._layout.declared_shapes()

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        feeds = {k: self._tf.constant(v) for k, v in self._layout.to_artifact(inputs).items()}
        return functools.partial(self._signature, **feeds)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.timed_call(inputs)()
        return self._layout.from_artifact({k: v.numpy() for k, v in result.items()})


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if PRIMARY_ONNX not in graph:
        return []
    requires = (ONNX, TENSORFLOW, ONNX2TF)
    parent = f"{PRIMARY_ONNX}-onnx2tf"
    return [Format("onnx2tf", parent=PRIMARY_ONNX, build="modelparity.formats.onnx2tf:convert",
                   requires=requires, produces="savedmodel",
                   description="onnx2tf: TF SavedModel plus float32/float16 .tflite"),
            Format("tf", parent=parent, load=SavedModelRunner, requires=requires,
                   description="TensorFlow SavedModel, serving_default signature")]
