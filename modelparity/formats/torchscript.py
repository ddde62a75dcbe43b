"""TorchScript by tracing, saved and reloaded from disk (what a LibTorch deployment loads)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.execution import torch_facts
from modelparity.formats.base import TORCH, Format, LoadContext
from modelparity.models import ModelArtifact


def trace(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """torch.jit.trace on the export inputs, then torch.jit.save."""
    import torch

    artifact = ModelArtifact(Path(model))
    inputs = [torch.from_numpy(v) for v in artifact.export_inputs().values()]
    with torch.no_grad():
        traced = torch.jit.trace(artifact.load_module(), tuple(inputs), check_trace=False)
    torch.jit.save(traced, str(Path(out) / "model.ts"))
    return {"file": "model.ts"}


class TorchScriptRunner:
    """torch.jit.load'ed module, called with tensors in the spec's input order."""

    runtime_modules = ("torch",)

    def __init__(self, context: LoadContext) -> None:
        import torch

        self._torch = torch
        self._module = self._load(context)
        self._outputs = context.output_names
        self.facts = {"runtime": f"{self.kind} {torch.__version__}", "provider": "CPU",
                      "threads": torch.get_num_threads(), **torch_facts("cpu")}

    kind = "torch.jit"

    def _load(self, context: LoadContext) -> Any:
        if context.model is not None:
            ModelArtifact(context.model).custom_ops()  # registers the torch operators it calls
        return self._torch.jit.load(str(context.artifact / "model.ts")).eval()

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        tensors = [self._torch.from_numpy(v) for v in inputs.values()]
        module, no_grad = self._module, self._torch.no_grad

        def call() -> Any:
            with no_grad():
                return module(*tensors)
        return call

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return as_named_outputs(self.timed_call(inputs)(), self._outputs)


class EagerRunner(TorchScriptRunner):
    """The model's own module, unpickled from the root artifact: torch eager as a deployment (its
    latency is the baseline the exports are measured against; its parity shows that the reference
    is reproducible from what was saved)."""

    kind = "torch eager"

    def _load(self, context: LoadContext) -> Any:
        return ModelArtifact(context.artifact).load_module().eval()


def as_named_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A module's return value (tensor, tuple or dict of tensors) as named numpy arrays; any other
    structure is a ValueError that says what came back and what the harness can name."""
    import torch

    if isinstance(result, Mapping):
        if sorted(map(str, result)) != sorted(names):
            raise ValueError(f"the model returned a dict with keys {sorted(map(str, result))}, but the "
                             f"spec's output_names are {names}: make them the same")
        values = [result[n] for n in names]
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(names):
        raise ValueError(f"the model returned {len(values)} outputs but the spec names "
                         f"{len(names)}: {names}")
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"output {name!r} is a {type(value).__name__}, not a tensor: the harness "
                             "names a tensor, a tuple/list of tensors or a dict of tensors; wrap the "
                             "module so that forward() returns one of those (e.g. flatten a list of "
                             "dicts into a tuple)")
    return {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    return [Format("eager", load=EagerRunner, requires=(TORCH,), custom_ops=True,
                   description="torch eager: the model's module as saved in the root artifact"),
            Format("torchscript", build="modelparity.formats.torchscript:trace",
                   load=TorchScriptRunner, requires=(TORCH,), produces="torchscript", custom_ops=True,
                   description="torch.jit.trace, saved and reloaded")]
