"""onnx-tf 1.10.0 (archived), the seed's route: `prepare(onnx_model).export_graph(dir)`, then TensorFlow,
and TFLite from that SavedModel with Optimize.DEFAULT.

onnx-tf lives in its own environment (modelparity/legacy_env.py); conversions and TensorFlow runs
happen in a worker process started with that environment's Python (onnx_tf_worker.py), which takes
the ONNX file and .npz inputs and answers with .npz outputs or a structured error. The .tflite file
it writes is run in the main environment with LiteRT, like every other .tflite.

Parent: the legacy exporter at opset 14, the seed's exporter, at the oldest opset that exports
scaled_dot_product_attention; onnx-tf's handlers stop well before the dynamo exporter's opsets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity import legacy_env
from modelparity.formats.base import ONNX, EnvironmentRequirement, Format, LoadContext, NotTimeable
from modelparity.formats.layout import Layout, describe_layout, onnx_shapes
from modelparity.formats.onnx_export import legacy_export
from modelparity.formats.tflite import LITERT, TFLiteRunner
from modelparity.worker import Worker

WORKER = Path(__file__).with_name("onnx_tf_worker.py")
OPSET = 14
LEGACY_ENV = EnvironmentRequirement("onnx-tf environment", legacy_env.CREATE_COMMAND,
                                    legacy_env.absent_reason)


class LegacyWorker(Worker):
    """A worker process in the onnx-tf environment (isolated from this one's site-packages)."""

    def __init__(self, log: Path, script: Path = WORKER, timeout: float = 600) -> None:
        super().__init__([str(legacy_env.env_python()), "-I", "-u", "-X", "faulthandler", str(script)],
                         log, "onnx-tf worker", timeout, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def convert(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """ONNX -> SavedModel in the worker; layout.json pairs the ONNX tensors with the signature's."""
    onnx_file = Path(source) / "model.onnx"
    worker = LegacyWorker(Path(out) / "worker.log", Path(params.get("worker_script") or WORKER))
    try:
        info = worker.request("convert", onnx=str(onnx_file), out=out)
    finally:
        worker.close()
    shapes = onnx_shapes(onnx_file)
    layout = Layout(describe_layout(shapes, {"inputs": list(shapes["inputs"]),
                                             "outputs": list(shapes["outputs"])},
                                    {"inputs": info.pop("inputs"), "outputs": info.pop("outputs")},
                                    prefer_channels_last=False))
    layout.save(Path(out))
    return {**info, "layout": layout.summary(), "environment": str(legacy_env.env_dir())}


def to_tflite(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The seed's TFLiteConverter.from_saved_model + Optimize.DEFAULT, in the onnx-tf environment."""
    worker = LegacyWorker(Path(out) / "worker.log")
    try:
        info = worker.request("tflite", saved_model=source, out=str(Path(out) / "model.tflite"))
    finally:
        worker.close()
    shutil.copy(Path(source) / "layout.json", Path(out) / "layout.json")
    return {**info, "file": "model.tflite"}


class OnnxTfRunner:
    """The onnx-tf SavedModel's serving signature, called in a worker kept for the session."""

    def __init__(self, context: LoadContext) -> None:
        self._artifact = context.artifact
        self._layout = Layout.load(context.artifact)
        # Removed, and the worker stopped, when the runner goes (at the end of the session at latest).
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="modelparity-onnx-tf-")
        self._scratch = Path(self._scratch_dir.name)
        self._worker = LegacyWorker(self._scratch / "worker.log")
        weakref.finalize(self, self._worker.close)
        self.facts = {"runtime": "tensorflow (onnx-tf environment)", "environment": str(legacy_env.env_dir()),
                      "layout": self._layout.summary()}

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return self._layout.declared_shapes()

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        raise NotTimeable("onnx-tf's SavedModel runs in the worker of its own environment; timed from "
                          "here, its latency would be that of the pipe and the .npz files")

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, answers = self._scratch / "inputs.npz", self._scratch / "outputs.npz"
        np.savez(feeds, **self._layout.to_artifact(inputs))
        self._worker.request("run", saved_model=str(self._artifact), inputs=str(feeds),
                             outputs=str(answers))
        with np.load(answers) as data:
            return self._layout.from_artifact({name: data[name] for name in data.files})


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    export = legacy_export(OPSET)
    nodes = [] if export.id in graph else [export]
    requires = (ONNX, LEGACY_ENV)
    params = {"pins": legacy_env.pins_digest()}
    parent = f"{export.id}-onnxtf"
    return nodes + [
        Format("onnxtf", parent=export.id, build="modelparity.formats.onnx_tf:convert", params=params,
               requires=requires, produces="savedmodel",
               description="onnx-tf 1.10.0 prepare + export_graph (its own environment)"),
        Format("tf", parent=parent, load=OnnxTfRunner, requires=requires,
               description="TensorFlow 2.15 in the onnx-tf environment, serving_default signature"),
        Format("tflite-drq", parent=parent, build="modelparity.formats.onnx_tf:to_tflite",
               load=TFLiteRunner, requires=(*requires, LITERT), precision="int8", produces="tflite",
               isolate_runtime=True,
               description="TFLiteConverter.from_saved_model, Optimize.DEFAULT, in the onnx-tf "
                           "environment; run with LiteRT"),
    ]
