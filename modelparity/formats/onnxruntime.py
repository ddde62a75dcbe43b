"""ONNX Runtime on the CPU: every ONNX artifact at full optimisation, and the primary export at each
graph-optimisation level and with the seed's threading options (intra_op_num_threads, ORT_PARALLEL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelparity.formats.base import ONNXRUNTIME, Format, LoadContext
from modelparity.formats.onnx_export import PRIMARY_ONNX

LEVELS = ("disabled", "basic", "extended", "all")


class OnnxRuntimeRunner:
    """An InferenceSession over `model.onnx` with the node's session options."""

    def __init__(self, context: LoadContext) -> None:
        import onnxruntime as ort

        params = context.params
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[params.get("level", "all")]
        if params.get("intra_op_threads"):
            options.intra_op_num_threads = params["intra_op_threads"]
        if params.get("parallel"):
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.log_severity_level = 3
        providers = list(params.get("providers", ["CPUExecutionProvider"]))
        self._session = ort.InferenceSession(str(context.artifact / "model.onnx"), options,
                                             providers=providers)
        self._outputs = context.output_names
        self.facts = {
            "runtime": f"onnxruntime {ort.__version__}",
            "providers_requested": providers,
            "providers": self._session.get_providers(),
            "graph_optimization_level": params.get("level", "all"),
            "intra_op_num_threads": options.intra_op_num_threads,
            "execution_mode": "parallel" if params.get("parallel") else "sequential",
        }

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return {i.name: [d if isinstance(d, int) else None for d in i.shape]
                for i in self._session.get_inputs()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, dict(inputs))
        return dict(zip(self._outputs, values, strict=True))


def _ort(parent: str, name: str = "ort", precision: str = "fp32", **params: Any) -> Format:
    return Format(name, parent=parent, load=OnnxRuntimeRunner, params=params, precision=precision,
                  requires=(ONNXRUNTIME,), description=f"ONNX Runtime CPU {params}")


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    nodes = []
    for node in graph.values():
        if node.produces == "onnx":
            nodes.append(_ort(node.id, precision=node.precision, level="all"))
    if PRIMARY_ONNX in graph:
        for level in LEVELS[:-1]:
            nodes.append(_ort(PRIMARY_ONNX, f"ort-{level}", level=level))
        nodes.append(_ort(PRIMARY_ONNX, "ort-seq1", level="all", intra_op_threads=1))
        nodes.append(_ort(PRIMARY_ONNX, "ort-par2", level="all", intra_op_threads=2, parallel=True))
    return nodes

