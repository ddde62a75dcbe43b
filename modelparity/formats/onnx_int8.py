"""ONNX INT8 with ONNX Runtime's quantizer, from the primary export: dynamic (`quantize_dynamic`,
weights quantised ahead, activations at run time) and static QDQ (`quantize_static`, activation
ranges calibrated on the model's own calibration inputs, one sample at a time).

Settings are fixed and recorded in the build info, because they decide the error on a given CPU:
dynamic uses QUInt8 weights (ORT's default QInt8 gave 6-40% of the output range as error on an AVX2
CPU without VNNI, where U8S8 kernels saturate; QUInt8 stayed within 2%), static QDQ uses U8 activations,
S8 weights per channel with `reduce_range` (7-bit weights, ORT's advice for CPUs without VNNI).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import ONNX, ONNXRUNTIME, Format, NotApplicable
from modelparity.formats.onnx_export import PRIMARY_ONNX
from modelparity.models import ModelArtifact

# The operator types ONNX Runtime's quantizers turn into integer kernels by default (a model without
# any is not quantised at all: the "INT8" file would be the FP32 one under another name).
QUANTISABLE = frozenset({"MatMul", "Conv", "Gemm", "ConvTranspose", "Attention", "LSTM", "GRU"})


def require_quantisable(path: Path, quantiser: str) -> None:
    """Raise NotApplicable when the graph has nothing `quantiser` would quantise."""
    import onnx

    types = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    if not types & QUANTISABLE:
        raise NotApplicable(f"{quantiser} has nothing to quantise in this model: it has no "
                            f"{'/'.join(sorted(QUANTISABLE))} node (its operators: "
                            f"{', '.join(sorted(types)) or 'none'})")


def quantize_dynamic(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize

    require_quantisable(Path(source) / "model.onnx", "onnxruntime quantize_dynamic")
    # DefaultTensorType: ONNX shape inference stops at a custom-domain node (a custom operator), and
    # the quantizer then cannot type the weights after it; they are float32, as ORT's error advises.
    quantize(str(Path(source) / "model.onnx"), str(Path(out) / "model.onnx"),
             weight_type=QuantType.QUInt8, extra_options={"DefaultTensorType": 1})  # onnx FLOAT
    return {"file": "model.onnx", "mode": "dynamic", "weight_type": "QUInt8",
            **_quantized_ops(Path(out) / "model.onnx")}


class _CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over the calibration inputs, one row a time."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._rows: Iterator[dict[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._rows, None)


def quantize_static(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as quantize

    require_quantisable(Path(source) / "model.onnx", "onnxruntime quantize_static")
    samples = ModelArtifact(Path(model)).calibration_samples()
    quantize(str(Path(source) / "model.onnx"), str(Path(out) / "model.onnx"),
             _CalibrationReader(samples), quant_format=QuantFormat.QDQ,
             activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
             reduce_range=True)
    return {"file": "model.onnx", "mode": "static QDQ", "activation_type": "QUInt8",
            "weight_type": "QInt8", "per_channel": True, "reduce_range": True,
            "calibration_samples": len(samples),
            **_quantized_ops(Path(out) / "model.onnx")}


def _quantized_ops(path: Path) -> dict[str, Any]:
    """How many nodes of each quantised op type the file has: a quantizer that changed nothing
    shows here (and then the check is FP32 in disguise)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if "Quant" in node.op_type or node.op_type.startswith(("QLinear", "MatMulInteger", "ConvInteger")):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if not counts:
        raise RuntimeError(f"the quantizer left {path} without any quantised operator")
    return {"quantized_ops": counts}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if PRIMARY_ONNX not in graph:
        return []
    requires = (ONNX, ONNXRUNTIME)
    return [
        Format("int8dyn", parent=PRIMARY_ONNX, build="modelparity.formats.onnx_int8:quantize_dynamic",
               precision="int8", requires=requires, produces="onnx",
               description="onnxruntime.quantization.quantize_dynamic, QUInt8 weights"),
        Format("int8qdq", parent=PRIMARY_ONNX, build="modelparity.formats.onnx_int8:quantize_static",
               precision="int8", requires=requires, produces="onnx",
               description="onnxruntime.quantization.quantize_static, QDQ, U8 activations, S8 "
                           "per-channel weights, reduce_range, calibrated on the model's inputs"),
    ]
