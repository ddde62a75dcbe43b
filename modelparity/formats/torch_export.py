"""torch.export: the model as an ExportedProgram, saved with torch.export.save and loaded back.

It is the parent of the paths that start from torch.export rather than from ONNX (ExecuTorch,
AOTInductor, Core ML): one export per model, shared by all of them, so a difference between two of
those paths is the lowering's, not the export's. Its own runner calls `ExportedProgram.module()`,
which separates an export bug from a lowering bug.

Dynamic axes come from the spec, as in the dynamo ONNX export (onnx_export.dynamic_shapes): a size
that must be a multiple of a step is exported as step * a free dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.formats.base import TORCH, Format, LoadContext
from modelparity.formats.onnx_export import dynamic_shapes
from modelparity.formats.torchscript import TorchScriptRunner
from modelparity.models import ModelArtifact

PROGRAM = "program.pt2"
NODE = "torch-export"


def exported_program(model: str) -> Any:
    """torch.export.export of the root artifact's module on its export inputs, with its dynamic axes."""
    import torch

    artifact = ModelArtifact(Path(model))
    meta = artifact.meta
    inputs = tuple(torch.from_numpy(v) for v in artifact.export_inputs().values())
    axes = {t: {int(d): a for d, a in dims.items()} for t, dims in meta["dynamic_axes"].items()}
    artifact.custom_ops()  # registers the torch operators the module calls
    return torch.export.export(artifact.load_module().eval(), inputs,
                               dynamic_shapes=dynamic_shapes(meta, axes), strict=False)


def export(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import torch

    program = exported_program(model)
    torch.export.save(program, str(Path(out) / PROGRAM))
    nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    return {"file": PROGRAM, "torch": torch.__version__, "operators": len(nodes),
            "range_constraints": {str(k): str(v) for k, v in program.range_constraints.items()}}


def load_program(directory: Path) -> Any:
    """The ExportedProgram saved by `export` in `directory`."""
    import torch

    return torch.export.load(str(directory / PROGRAM))


class ExportedProgramRunner(TorchScriptRunner):
    """`ExportedProgram.module()` of the saved program, called with tensors in the spec's order."""

    kind = "torch.export ExportedProgram.module(), torch"

    def _load(self, context: LoadContext) -> Any:
        if context.model is not None:
            ModelArtifact(context.model).custom_ops()  # registers the torch operators it calls
        self._program = load_program(context.artifact)
        self._input_names = context.input_names
        return self._program.module()

    def declared_shapes(self) -> dict[str, list[int | None]]:
        """Each user input's shape as the program holds it: a symbolic size (the export's Dim) is
        None, so suites/dynamic sees an axis the export froze."""
        placeholders = {n.name: n for n in self._program.graph.nodes if n.op == "placeholder"}
        shapes = [[d if isinstance(d, int) else None for d in placeholders[name].meta["val"].shape]
                  for name in self._program.graph_signature.user_inputs]
        return dict(zip(self._input_names, shapes, strict=True))


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    return [Format(NODE, build="modelparity.formats.torch_export:export", load=ExportedProgramRunner,
                   requires=(TORCH,), produces="exported-program", custom_ops=True,
                   description="torch.export.export (non-strict) with the spec's dynamic axes, "
                               "saved and loaded; run as ExportedProgram.module()")]
