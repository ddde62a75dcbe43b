"""Which axis permutation turns the model's own layout (NCHW) into the one an artifact really has.

onnx2tf makes inputs of rank >= 3 channels-last; runners feed the model's own arrays and must undo
that, so the test never sees it. The permutation is found at build time by matching the ONNX
graph's shapes against the converted graph's, recorded in layout.json next to the artifact (and so in
the report), and applied by the runners.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Shape = Sequence[int | None]
LAYOUT_FILE = "layout.json"


def channels_last(rank: int) -> tuple[int, ...]:
    """NCHW -> NHWC (and NCL -> NLC, NCDHW -> NDHWC)."""
    return (0, *range(2, rank), 1)


def _fits(source: Shape, target: Shape, perm: Sequence[int]) -> bool:
    return len(source) == len(target) and all(
        s is None or t is None or s == t for s, t in zip((source[p] for p in perm), target, strict=True))


def match_permutation(source: Shape, target: Shape, prefer_channels_last: bool = True
                      ) -> tuple[tuple[int, ...], bool]:
    """The permutation p with target == source[p], and whether the shapes left it ambiguous.

    Candidates are the identity and channels-last (rank >= 3). When the shapes fit both (symbolic or
    equal dims), the converter's habit decides: onnx2tf makes such tensors channels-last, onnx-tf
    keeps them as they are.
    """
    rank = len(source)
    identity = tuple(range(rank))
    candidates = [channels_last(rank), identity] if rank >= 3 else [identity]
    if not prefer_channels_last:
        candidates.reverse()
    fitting = [p for p in dict.fromkeys(candidates) if _fits(source, target, p)]
    if not fitting:
        raise ValueError(f"no layout maps the model's shape {list(source)} onto the artifact's "
                         f"{list(target)}")
    return fitting[0], len(fitting) > 1


def onnx_shapes(onnx_path: Path) -> dict[str, dict[str, list[int | None]]]:
    """Input and output shapes of an ONNX graph, symbolic dimensions as None."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def dims(value: Any) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]

    return {"inputs": {v.name: dims(v) for v in graph.input},
            "outputs": {v.name: dims(v) for v in graph.output}}


def describe_layout(model_shapes: Mapping[str, Mapping[str, Shape]],
                    artifact_names: Mapping[str, Sequence[str]],
                    artifact_shapes: Mapping[str, Mapping[str, Shape]],
                    prefer_channels_last: bool = True) -> dict[str, Any]:
    """layout.json's content: per model tensor, the artifact's tensor name, shape and permutation.

    `artifact_names` pairs the model's inputs and outputs (in order) with the artifact's names.
    """
    layout: dict[str, Any] = {}
    for kind in ("inputs", "outputs"):
        entries = {}
        for (name, shape), target_name in zip(model_shapes[kind].items(), artifact_names[kind],
                                              strict=True):
            target = artifact_shapes[kind][target_name]
            perm, ambiguous = match_permutation(shape, target, prefer_channels_last)
            entries[name] = {"artifact_name": target_name, "model_shape": list(shape),
                             "artifact_shape": list(target), "permutation": list(perm),
                             "ambiguous": ambiguous,
                             "layout": "channels-last" if perm != tuple(range(len(perm))) else "as model"}
        layout[kind] = entries
    return layout


class Layout:
    """Applies a recorded layout: model arrays in, artifact arrays out, and back."""

    def __init__(self, description: Mapping[str, Any]) -> None:
        self.description = description

    @classmethod
    def load(cls, directory: Path) -> Layout:
        return cls(json.loads((directory / LAYOUT_FILE).read_text()))

    def save(self, directory: Path) -> None:
        (directory / LAYOUT_FILE).write_text(json.dumps(self.description, indent=1))

    def artifact_names(self, kind: str) -> list[str]:
        """The artifact's tensor names for the model's inputs or outputs, in the model's order."""
        return [entry["artifact_name"] for entry in self.description[kind].values()]

    def to_artifact(self, inputs: Mapping[str, np.ndarray], keep_names: bool = False
                    ) -> dict[str, np.ndarray]:
        """The model's arrays permuted into the artifact's layout, under the artifact's names (or
        the model's, for runners that pair tensors themselves)."""
        entries = self.description["inputs"]
        return {n if keep_names else entries[n]["artifact_name"]:
                np.ascontiguousarray(np.transpose(v, entries[n]["permutation"]))
                for n, v in inputs.items()}

    def from_artifact(self, outputs: Mapping[str, np.ndarray], keep_names: bool = False
                      ) -> dict[str, np.ndarray]:
        """The artifact's outputs (keyed by its names, or by the model's) in the model's layout."""
        result = {}
        for name, entry in self.description["outputs"].items():
            inverse = np.argsort(entry["permutation"])
            value = outputs[name if keep_names else entry["artifact_name"]]
            result[name] = np.ascontiguousarray(np.transpose(value, inverse))
        return result

    def to_model_shape(self, name: str, artifact_shape: Sequence[int | None]) -> list[int | None]:
        """An input shape as the artifact declares it, in the model's dim order."""
        inverse = np.argsort(self.description["inputs"][name]["permutation"])
        return [artifact_shape[i] for i in inverse]

    def declared_shapes(self) -> dict[str, list[int | None]]:
        """The artifact's input shapes recorded at build time, in the model's dim order."""
        return {name: self.to_model_shape(name, entry["artifact_shape"])
                for name, entry in self.description["inputs"].items()}

    def summary(self) -> dict[str, str]:
        return {f"{kind[:-1]} {name}": f"{e['layout']} {e['artifact_shape']}"
                for kind in ("inputs", "outputs") for name, e in self.description[kind].items()}
