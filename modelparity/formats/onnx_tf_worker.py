"""The onnx-tf worker: runs with the legacy environment's Python, never in the main environment.

onnx-tf 1.10.0 (archived) needs onnx<1.16, Keras 2 and tensorflow-addons, which cannot share an
environment with the rest of the stack. This file is executed as a script by that environment's
interpreter; it imports nothing from modelparity (the package is not installed there) and only
the standard library, numpy, onnx, onnx-tf and TensorFlow.

Protocol: one JSON request per line on stdin, one JSON answer per line on the protocol stream (the
process's original stdout; everything the libraries print goes to stderr, which the caller logs).
An answer is {"ok": true, "result": ...} or {"ok": false, "error": {"type", "message", "traceback"}}.
Operations:
  convert   {"onnx": file, "out": dir}              onnx_tf.backend.prepare + export_graph
  tflite    {"saved_model": dir, "out": file}       TFLiteConverter.from_saved_model, Optimize.DEFAULT
  run       {"saved_model": dir, "inputs": npz, "outputs": npz}
  crash     {}                                      a deliberate segfault, for the harness's tests
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

SIGNATURE = "serving_default"
_loaded: dict[str, Any] = {}


def convert(onnx: str, out: str) -> dict[str, Any]:
    import onnx as onnx_lib
    import onnx_tf
    import tensorflow as tf
    from onnx_tf.backend import prepare

    prepare(onnx_lib.load(onnx)).export_graph(out)
    signature = tf.saved_model.load(out).signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    return {"tensorflow": tf.__version__, "onnx_tf": onnx_tf.version.version,
            "onnx": onnx_lib.__version__,
            "inputs": {n: s.shape.as_list() for n, s in inputs.items()},
            "outputs": {n: s.shape.as_list() for n, s in signature.structured_outputs.items()}}


def tflite(saved_model: str, out: str) -> dict[str, Any]:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with open(out, "wb") as handle:
        handle.write(converter.convert())
    return {"tensorflow": tf.__version__}


def run(saved_model: str, inputs: str, outputs: str) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    if saved_model not in _loaded:
        _loaded[saved_model] = tf.saved_model.load(saved_model).signatures[SIGNATURE]
    signature = _loaded[saved_model]
    with np.load(inputs) as data:
        feeds = {name: tf.constant(data[name]) for name in data.files}
    result = signature(**feeds)
    np.savez(outputs, **{name: value.numpy() for name, value in result.items()})
    return {"outputs": sorted(result)}


def crash() -> None:
    import ctypes

    ctypes.string_at(0)


OPERATIONS = {"convert": convert, "tflite": tflite, "run": run, "crash": crash}


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library output must not corrupt the protocol
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        operation = request.pop("op")
        try:
            answer: dict[str, Any] = {"ok": True, "result": OPERATIONS[operation](**request)}
        except Exception as error:  # every failure goes back to the caller as data
            traceback.print_exc()
            answer = {"ok": False, "error": {"type": type(error).__name__, "message": str(error),
                                             "traceback": traceback.format_exc(limit=-4)}}
        sys.stderr.flush()
        protocol.write(json.dumps(answer, default=str) + "\n")


if __name__ == "__main__":
    main()
