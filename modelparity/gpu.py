"""The GPU side of this machine, read, never assumed: what is there, what is missing, and why a GPU
format cannot run here (the one line a CPU-only run prints for it).

ONNX Runtime ships as two packages that install the same `onnxruntime` module: `onnxruntime` (CPU)
and `onnxruntime-gpu` (CUDA, TensorRT). With both installed, whichever was installed last silently
wins, so the harness refuses to start (`onnxruntime_conflict`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from functools import cache
from typing import Any

from modelparity.machine import distribution_version

GPU_INSTALL = "pip install -c constraints.txt -e '.[all-gpu]' (or: tox -e gpu)"


def onnxruntime_conflict() -> str | None:
    """Why this environment's ONNX Runtime is ambiguous (both packages installed), or None."""
    cpu, gpu = distribution_version("onnxruntime"), distribution_version("onnxruntime-gpu")
    if cpu and gpu:
        return (f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed; they provide the same "
                "module and the one installed last wins. Keep one: `pip uninstall -y onnxruntime "
                "onnxruntime-gpu && pip install -c constraints.txt onnxruntime-gpu` on a GPU machine "
                "(or `... onnxruntime` on a CPU one)")
    return None


@cache
def gpu_facts() -> dict[str, Any]:
    """GPU names and driver (nvidia-smi), torch's CUDA and cuDNN, ONNX Runtime's providers, TensorRT."""
    facts: dict[str, Any] = {"gpus": [], "driver": None}
    if shutil.which("nvidia-smi"):
        try:
            answer = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=True)
            rows = [[part.strip() for part in line.split(",")] for line in answer.stdout.splitlines() if line]
            facts["gpus"] = [row[0] for row in rows]
            facts["driver"] = rows[0][1] if rows and len(rows[0]) > 1 else None
        except (OSError, subprocess.SubprocessError) as error:
            facts["nvidia_smi_error"] = str(error)
    try:
        import torch

        facts["torch_cuda_build"] = torch.version.cuda
        facts["torch_cuda_available"] = torch.cuda.is_available()
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        facts["torch_cuda_available"] = False
    try:
        import onnxruntime

        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        facts["onnxruntime_providers"] = []
    facts["tensorrt"] = distribution_version("tensorrt-cu13") or distribution_version("tensorrt")
    return facts


def summary() -> str:
    """One header line: the GPU and its stack, or what is missing."""
    facts = gpu_facts()
    if not facts["gpus"]:
        return "none (no NVIDIA GPU visible to nvidia-smi): GPU formats are skipped as not applicable"
    return (f"{', '.join(facts['gpus'])}; driver {facts['driver']}; torch CUDA "
            f"{facts.get('torch_cuda_build')} (available: {facts.get('torch_cuda_available')}), cuDNN "
            f"{facts.get('cudnn')}; onnxruntime providers {facts['onnxruntime_providers']}; TensorRT "
            f"{facts['tensorrt'] or 'not installed'}")


def torch_cuda_applies(machine: Mapping[str, Any]) -> str | None:
    """`applies` for torch on CUDA: why it cannot run here, or None."""
    facts = gpu_facts()
    if facts.get("torch_cuda_available"):
        return None
    where = f"GPUs {facts['gpus']}" if facts["gpus"] else "no NVIDIA GPU (nvidia-smi finds none)"
    return (f"not applicable: torch.cuda.is_available() is False here ({where}; torch built for CUDA "
            f"{facts.get('torch_cuda_build')}); runs on a machine with an NVIDIA GPU and driver")
