"""Deliberately broken formats, loaded with --format-plugin, to prove the checks fail."""

import ctypes
import time
from pathlib import Path

from modelparity.formats.base import ONNXRUNTIME, Format, Requirement
from modelparity.formats.onnxruntime import OnnxRuntimeRunner

HERE = Path(__file__).resolve()


def perturb_one_weight(source, out, params):
    """Copy the ONNX file with one element of the largest initializer shifted by `delta`."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(Path(source) / "model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(biggest).copy()
    values.flat[0] += params["delta"]
    biggest.CopyFrom(numpy_helper.from_array(values, biggest.name))
    onnx.save(model, str(Path(out) / "model.onnx"))
    return {"perturbed": biggest.name}


def segfault(source, out, params):
    ctypes.string_at(0)


def hang(source, out, params):
    time.sleep(3600)


def formats(graph, options):
    ort = dict(load=OnnxRuntimeRunner, requires=(ONNXRUNTIME,), params={"level": "all"})
    return [
        Format("perturbed", parent="onnx-dynamo", build=f"{HERE}:perturb_one_weight",
               params={"delta": 0.5}, produces="onnx"),
        Format("ort", parent="onnx-dynamo-perturbed", **ort),
        Format("segfaulting", parent="onnx-dynamo", build=f"{HERE}:segfault", produces="onnx"),
        Format("ort", parent="onnx-dynamo-segfaulting", **ort),
        Format("hanging", parent="onnx-dynamo", build=f"{HERE}:hang", produces="onnx"),
        Format("ort", parent="onnx-dynamo-hanging", **ort),
        Format("absent", parent="onnx-dynamo", load=OnnxRuntimeRunner,
               requires=(Requirement("modelparity_absent_backend",
                                     "pip install modelparity-absent-backend"),)),
    ]
