"""torch eager on CUDA, in the three ways a GPU deployment runs it: float32 with TF32 off (the
reference's own arithmetic on another device), float32 with TF32 on (torch's default for cuDNN
convolutions; 10-bit mantissa products), and FP16 autocast.

The TF32 flags are process-wide: the runner sets them around each of its own calls and restores
them, so the reference (torch eager on the CPU) and other formats never see them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from modelparity.execution import torch_facts
from modelparity.formats.base import TORCH, Format, LoadContext
from modelparity.formats.torchscript import as_named_outputs
from modelparity.gpu import gpu_facts, torch_cuda_applies
from modelparity.models import ModelArtifact

MODES = {
    # name: (allow TF32, autocast dtype, tolerance profile, what it computes in)
    "cuda": (False, None, "fp32", "f32"),
    "cuda-tf32": (True, None, "tf32", "tf32"),
    "cuda-fp16": (False, "float16", "fp16", "f16"),
}


class CudaEagerRunner:
    """The model's module from the root artifact, moved to cuda:0, called under its mode's flags."""

    runtime_modules = ("torch",)

    def __init__(self, context: LoadContext) -> None:
        import torch

        self._torch = torch
        self._tf32, autocast, _, compute = MODES[context.params["mode"]]
        self._autocast = getattr(torch, autocast) if autocast else None
        module = ModelArtifact(context.artifact).load_module().eval()
        self._module = module.to("cuda")
        self._outputs = context.output_names
        with self._flags():
            flags = torch_facts("cuda")
        facts = gpu_facts()
        self.facts = {"runtime": f"torch {torch.__version__} eager on CUDA", "provider": "CUDA",
                      "gpu": torch.cuda.get_device_name(0), "driver": facts.get("driver"),
                      "cuda": torch.version.cuda, "cudnn": facts.get("cudnn"),
                      **flags, "requested": {"compute_precision": compute}}
        if self._autocast is not None:
            self.facts["compute_precision"] = "f16"
            self.facts["compute_precision_source"] = "torch.autocast(float16)"

    @contextlib.contextmanager
    def _flags(self) -> Iterator[None]:
        backends = self._torch.backends
        saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32
        backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = self._tf32
        try:
            yield
        finally:
            backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """The module's call on inputs already on the GPU, synchronised so the time is the GPU's."""
        torch = self._torch
        tensors = [torch.from_numpy(v).to("cuda") for v in inputs.values()]
        autocast = (torch.autocast("cuda", dtype=self._autocast) if self._autocast is not None
                    else contextlib.nullcontext())

        def call() -> Any:
            with self._flags(), torch.no_grad(), autocast:
                result = self._module(*tensors)
            torch.cuda.synchronize()
            return result
        return call

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = as_named_outputs(self.timed_call(inputs)(), self._outputs)
        return {name: value.astype(np.float32) if value.dtype == np.float16 else value
                for name, value in outputs.items()}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    return [Format(f"eager-{mode}", load=CudaEagerRunner, params={"mode": mode}, precision=profile,
                   requires=(TORCH,), applies=torch_cuda_applies, device="cuda", custom_ops=True,
                   description=f"torch eager on CUDA ({'TF32 on' if tf32 else 'TF32 off'}"
                               f"{', FP16 autocast' if autocast else ''})")
            for mode, (tf32, autocast, profile, _) in MODES.items()]
