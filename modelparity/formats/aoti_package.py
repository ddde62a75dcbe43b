"""AOTInductor: the torch.export program compiled ahead of time by Inductor into a .pt2 package
(`torch._inductor.aoti_compile_and_package`), the successor of TorchScript for C++ serving.

The package runs two ways, as it is deployed: from Python (`torch._inductor.aoti_load_package`) and
from C++ (`torch::inductor::AOTIModelPackageLoader` in the LibTorch C++ program, libtorch_cpp.py),
both on the CPU. Dynamic axes are the export's (the spec's ranges); Inductor compiles kernels for
symbolic sizes. The generated code checks its inputs' shapes only when AOTI_RUNTIME_CHECK_INPUTS
is set, which a deployment does not do by default, and neither does the harness: a package
exported with a frozen batch then answers another batch with wrong rows, without an error
(suites/dynamic fails it; tests/test_edge_formats.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.formats.base import TORCH, Format, LoadContext
from modelparity.formats.libtorch_cpp import BUILD as CPP_BUILD
from modelparity.formats.libtorch_cpp import COMPILER, LibTorchCppRunner, program_params
from modelparity.formats.torch_export import NODE as EXPORT_NODE
from modelparity.formats.torch_export import load_program
from modelparity.formats.torchscript import TorchScriptRunner
from modelparity.machine import machine_info
from modelparity.models import ModelArtifact

PACKAGE = "model.pt2"
NODE = "aoti"


def compile_package(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """aoti_compile_and_package of the saved ExportedProgram, for the CPU."""
    import torch

    package = Path(out) / PACKAGE
    ModelArtifact(Path(model)).custom_ops()  # registers the torch operators the program calls
    torch._inductor.aoti_compile_and_package(load_program(Path(source)), package_path=str(package))
    return {"file": PACKAGE, "torch": torch.__version__, "bytes": package.stat().st_size,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


class AotiPythonRunner(TorchScriptRunner):
    """The package loaded with torch._inductor.aoti_load_package, called with tensors in the spec's
    input order."""

    kind = "AOTInductor package (aoti_load_package), torch"

    def _load(self, context: LoadContext) -> Any:
        if context.model is not None:
            ModelArtifact(context.model).custom_ops()  # registers the torch operators it calls
        return self._torch._inductor.aoti_load_package(str(context.artifact / PACKAGE))


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if EXPORT_NODE not in graph:
        return []
    package = f"{EXPORT_NODE}-{NODE}"
    # Inductor writes vector code for the ISA it finds (AVX2, AVX-512, AMX): the CPU's flags key the
    # package, so a store shared by machines of two kinds never hands one the other's kernels.
    params = {"cpu_flags": machine_info()["cpu_flags"]}
    return [Format(NODE, parent=EXPORT_NODE, build="modelparity.formats.aoti_package:compile_package",
                   load=AotiPythonRunner, params=params, requires=(TORCH,), produces="aoti-package",
                   isolate_runtime=True,
                   description="AOTInductor .pt2 package (aoti_compile_and_package), CPU, run with "
                               "aoti_load_package"),
            Format("cpp", parent=package, build=CPP_BUILD, load=LibTorchCppRunner,
                   params=program_params("aoti", PACKAGE), requires=(TORCH, COMPILER),
                   times_natively=True,
                   description="the AOTInductor package run by the C++ program "
                               "(AOTIModelPackageLoader, linked against LibTorch)")]
