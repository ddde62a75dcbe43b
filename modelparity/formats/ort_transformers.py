"""The seed's `onnxruntime.transformers.optimizer.optimize_model(..., model_type='bert', num_heads=0)`.

It fuses attention, LayerNorm and GELU patterns; on a CNN there is nothing to fuse. The build records
the operator counts before and after, and the report says "no change" when they are equal, instead of
presenting an untouched graph as an optimised format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.formats.base import ONNX, ONNXRUNTIME, Format
from modelparity.formats.onnx_export import PRIMARY_ONNX


def optimize(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    before = Counter(n.op_type for n in onnx.load(str(Path(source) / "model.onnx")).graph.node)
    optimized = optimize_model(str(Path(source) / "model.onnx"), model_type=params["model_type"],
                               num_heads=params["num_heads"], hidden_size=0)
    optimized.save_model_to_file(str(Path(out) / "model.onnx"))
    after = Counter(n.op_type for n in onnx.load(str(Path(out) / "model.onnx")).graph.node)
    changes = {op: after[op] - before[op] for op in sorted(set(before) | set(after))
               if after[op] != before[op]}
    return {"file": "model.onnx", "nodes_before": sum(before.values()),
            "nodes_after": sum(after.values()), "op_count_changes": changes,
            "changed": bool(changes),
            "note": "fused " + ", ".join(f"{op} {d:+d}" for op, d in changes.items()) if changes
            else "no change: the optimizer found nothing to fuse in this graph"}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if PRIMARY_ONNX not in graph:
        return []
    return [Format("ortopt", parent=PRIMARY_ONNX, build="modelparity.formats.ort_transformers:optimize",
                   params={"model_type": "bert", "num_heads": 0}, requires=(ONNX, ONNXRUNTIME),
                   produces="onnx",
                   description="onnxruntime.transformers optimize_model(model_type='bert', num_heads=0)")]
