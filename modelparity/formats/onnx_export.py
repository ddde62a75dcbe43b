"""ONNX export with both torch exporters, with the model's dynamic axes, checked by onnx.checker.

`onnx-dynamo` is what `torch.onnx.export(model, args, f)` gives by default (dynamo=True, the exporter's
default opset) and is the parent of the derived ONNX formats. `--opsets` adds, per opset N,
`onnx-legacy-opN` (the TorchScript-based exporter, which writes the opset it is asked for) and
`onnx-dynamo-reqN`: the dynamo exporter silently keeps its own opset when its down-conversion fails,
so its id says what was requested and the report shows what the file has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.custom_ops import export_mappings
from modelparity.formats.base import ONNX, ONNXSCRIPT, TORCH, Format
from modelparity.models import ModelArtifact

PRIMARY_ONNX = "onnx-dynamo"


class OpsetMismatch(RuntimeError):
    """An exporter that honours the requested opset wrote another one."""


def export(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """torch.onnx.export with `params` exporter ('legacy' or 'dynamo') and opset (None: default)."""
    import warnings

    import onnx
    import torch

    artifact = ModelArtifact(Path(model))
    meta = artifact.meta
    inputs = tuple(torch.from_numpy(v) for v in artifact.export_inputs().values())
    path = Path(out) / "model.onnx"
    dynamo = params["exporter"] == "dynamo"
    kwargs: dict[str, Any] = {"input_names": meta["inputs"], "output_names": meta["outputs"],
                              "dynamo": dynamo}
    if params.get("opset") is not None:
        kwargs["opset_version"] = params["opset"]
    axes = {t: {int(d): a for d, a in dims.items()} for t, dims in meta["dynamic_axes"].items()}
    if dynamo:
        kwargs["dynamic_shapes"] = dynamic_shapes(meta, axes)
        kwargs["external_data"] = False
    else:
        kwargs["dynamic_axes"] = axes
    kwargs.update(export_mappings(artifact.custom_ops(), dynamo, params.get("opset")))
    # No torch.no_grad(): users export without it, and under it nn.TransformerEncoder takes a fused
    # fast path (aten::_transformer_encoder_layer_fwd) the legacy exporter cannot export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        torch.onnx.export(artifact.load_module(), inputs, str(path), **kwargs)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    actual = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if not dynamo and params.get("opset") is not None and actual != params["opset"]:
        raise OpsetMismatch(f"asked the legacy exporter for opset {params['opset']}, the file has "
                            f"{actual}")
    requested = params.get("opset")
    note = (f"asked for opset {requested}, the file has opset {actual}"
            if requested is not None and requested != actual else None)
    return {"file": "model.onnx", "opset_requested": requested, "opset": actual, "note": note,
            "nodes": len(proto.graph.node), "exporter": params["exporter"],
            "torch": torch.__version__, "onnx": onnx.__version__}


def dynamic_shapes(meta: Mapping[str, Any], axes: Mapping[str, Mapping[int, str]]) -> tuple:
    """torch.export's dynamic_shapes (one entry per positional input) from the spec's axes."""
    from torch.export import Dim

    dims = {}
    for name, (lo, hi, step) in meta["axis_ranges"].items():
        # A size that must be a multiple of `step` is step * a free dim: torch.export would otherwise
        # find the model's divisibility guards violated by the declared range.
        dims[name] = (Dim(name, min=lo, max=hi) if step == 1
                      else step * Dim(f"{name}_over_{step}", min=-(-lo // step), max=hi // step))
    return tuple({d: dims[a] for d, a in axes.get(name, {}).items()} or None
                 for name in meta["inputs"])


def newest_opset() -> int:
    """The newest opset torch.onnx accepts (read from torch, never assumed)."""
    from torch.onnx import _constants

    return int(_constants.ONNX_MAX_OPSET)


REQUIRES = (TORCH, ONNX, ONNXSCRIPT)
BUILD = "modelparity.formats.onnx_export:export"


def legacy_export(opset: int) -> Format:
    """The TorchScript-based exporter at `opset` (other formats may need a particular one)."""
    return Format(f"onnx-legacy-op{opset}", build=BUILD, requires=REQUIRES,
                  params={"exporter": "legacy", "opset": opset}, produces="onnx", custom_ops=True,
                  description=f"TorchScript-based exporter (dynamo=False), opset {opset}")


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    nodes = [Format("onnx-dynamo", build=BUILD, params={"exporter": "dynamo", "opset": None},
                    requires=REQUIRES, produces="onnx", custom_ops=True,
                    description="torch.onnx.export default (dynamo=True, default opset)")]
    for opset in options["opsets"]:
        nodes.append(legacy_export(opset))
        nodes.append(Format(f"onnx-dynamo-req{opset}", build=BUILD, requires=REQUIRES,
                            params={"exporter": "dynamo", "opset": opset}, produces="onnx",
                            custom_ops=True,
                            description=f"dynamo exporter asked for opset {opset}"))
    return nodes
