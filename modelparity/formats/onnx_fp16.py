"""ONNX FP16 with onnxconverter-common, as in the seed (keep_io_types=True: float32 in and out).

ONNX Runtime's CPU provider computes many FP16 operators in FP32, so on a CPU this format tests the
converter's rounding of weights and constants more than FP16 arithmetic; the report says which
provider ran it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.formats.base import ONNX, ONNXCONVERTER_COMMON, Format
from modelparity.formats.onnx_export import PRIMARY_ONNX


def convert(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(Path(source) / "model.onnx"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(Path(out) / "model.onnx"))
    truncated = sum("truncated" in str(w.message) for w in caught)
    return {"file": "model.onnx", "keep_io_types": True, "constants_clamped_warnings": truncated}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if PRIMARY_ONNX not in graph:
        return []
    return [Format("fp16", parent=PRIMARY_ONNX, build="modelparity.formats.onnx_fp16:convert",
                   precision="fp16", requires=(ONNX, ONNXCONVERTER_COMMON), produces="onnx",
                   description="onnxconverter-common float16, keep_io_types=True")]
