"""ExecuTorch: the torch.export program lowered to a .pte program and run by ExecuTorch's runtime
(`executorch.runtime`, the same C++ runtime a phone links, through its Python bindings).

Two programs per model: XNNPACK-delegated (`to_edge_transform_and_lower` with XnnpackPartitioner,
what ExecuTorch's docs give for CPU) and portable (`to_edge(...).to_executorch()`, ExecuTorch's
reference kernels, no delegate). Both come from one export, so a difference between them is the
delegate's (XNNPACK ignoring `alpha` in add/sub, executorch #11683/#11684, is such a bug). Which
operators the partitioner delegated is written beside the program (delegation.json) and shown in
the check's execution facts.

Dynamic axes: the export's Dims (the spec's ranges) carry through; ExecuTorch plans memory for the
upper bound of each range, so a size above the spec's maximum is refused by the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import TORCH, Format, LoadContext, Requirement
from modelparity.formats.torch_export import NODE as EXPORT_NODE
from modelparity.formats.torch_export import load_program
from modelparity.machine import distribution_version
from modelparity.models import ModelArtifact

EXECUTORCH = Requirement("executorch", "pip install 'modelparity[edge]'")
PROGRAM = "model.pte"
DELEGATION = "delegation.json"


def lower(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The saved ExportedProgram to a .pte: XNNPACK-delegated when params['delegate'] is "xnnpack",
    else the portable program."""
    from executorch.exir import to_edge, to_edge_transform_and_lower

    ModelArtifact(Path(model)).custom_ops()  # registers the torch operators the program calls
    program = load_program(Path(source))
    if params["delegate"] == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    else:
        edge = to_edge(program)
    delegation = delegation_facts(edge.exported_program().graph_module)
    (Path(out) / DELEGATION).write_text(json.dumps(delegation, indent=1))
    (Path(out) / PROGRAM).write_bytes(edge.to_executorch().buffer)
    return {"file": PROGRAM, "executorch": distribution_version("executorch"),
            "delegated_nodes": delegation["delegated_nodes"],
            "non_delegated_nodes": delegation["non_delegated_nodes"]}


def delegation_facts(graph_module: Any) -> dict[str, Any]:
    """ExecuTorch's own count of delegated and non-delegated nodes, overall and per operator."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    return {"delegated_subgraphs": info.num_delegated_subgraphs,
            "delegated_nodes": info.num_delegated_nodes,
            "non_delegated_nodes": info.num_non_delegated_nodes,
            # operators only: getitem, sym_size and the size arithmetic of dynamic dims are nodes too
            "not_delegated": sorted(op for op, b in info.delegation_by_operator.items()
                                    if b.non_delegated and op.startswith("aten_")),
            "by_operator": {op: {"delegated": b.delegated, "not_delegated": b.non_delegated}
                            for op, b in sorted(info.delegation_by_operator.items())}}


class ExecuTorchRunner:
    """The program's `forward` method through executorch.runtime, called with tensors in the spec's
    input order; outputs named in the spec's order."""

    runtime_modules = ("executorch.runtime",)

    def __init__(self, context: LoadContext) -> None:
        import torch
        from executorch.runtime import Runtime, Verification

        self._torch = torch
        runtime = Runtime.get()
        # the program is kept: its methods' memory lives as long as it does
        self._program = runtime.load_program(str(context.artifact / PROGRAM),
                                             verification=Verification.Minimal)
        self._method = self._program.load_method("forward")
        self._outputs = context.output_names
        delegated = json.loads((context.artifact / DELEGATION).read_text())
        xnnpack = context.params["delegate"] == "xnnpack"
        self.facts = {"runtime": f"executorch {distribution_version('executorch')} (executorch.runtime)",
                      "provider": "XNNPACK delegate" if xnnpack else "portable kernels",
                      "devices": ["CPU"],
                      "backends": sorted(runtime.backend_registry.registered_backend_names),
                      "delegate": "XNNPACK" if delegated["delegated_nodes"] else "none",
                      "delegation": delegated}
        if xnnpack and not delegated["delegated_nodes"]:
            self.facts["note"] = ("the XNNPACK partitioner delegated no node of this program; "
                                  "ExecuTorch's portable kernels ran all of it")
        elif xnnpack and delegated["not_delegated"]:
            self.facts["note"] = (f"XNNPACK took {delegated['delegated_nodes']} nodes; portable kernels "
                                  f"ran {', '.join(delegated['not_delegated'])}")

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        tensors = [self._torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        method = self._method
        return lambda: method.execute(tensors)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = list(self.timed_call(inputs)())
        if len(values) != len(self._outputs):
            raise ValueError(f"the ExecuTorch program returned {len(values)} outputs but the spec names "
                             f"{len(self._outputs)}: {self._outputs}")
        return {name: value.detach().numpy().copy()
                for name, value in zip(self._outputs, values, strict=True)}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if EXPORT_NODE not in graph:
        return []
    requires = (TORCH, EXECUTORCH)
    build = "modelparity.formats.executorch_pte:lower"
    return [Format("executorch-xnnpack", parent=EXPORT_NODE, build=build, load=ExecuTorchRunner,
                   params={"delegate": "xnnpack"}, requires=requires, produces="pte", isolate_runtime=True,
                   description="ExecuTorch .pte, to_edge_transform_and_lower with XnnpackPartitioner"),
            Format("executorch-portable", parent=EXPORT_NODE, build=build, load=ExecuTorchRunner,
                   params={"delegate": None}, requires=requires, produces="pte", isolate_runtime=True,
                   description="ExecuTorch .pte, to_edge(...).to_executorch(): portable kernels, "
                               "no delegate")]
