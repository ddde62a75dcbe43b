"""Facts about this machine and the installed tools, read, never assumed.

The CPU decides precision defaults (OpenVINO runs bf16 by default where the CPU has BF16) and INT8
kernels (VNNI), and CI machines differ, so every report carries them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import cache, lru_cache
from importlib import metadata
from typing import Any

# Flags that change numerics or kernels of the runtimes under test.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                      "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")

TOOLS = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
         "onnxconverter-common", "openvino", "numpy", "pytest", "hypothesis", "pytest-benchmark")


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    model, flags = _cpu()
    return {"cpu_model": model, "cpu_flags": [f for f in RELEVANT_CPU_FLAGS if f in flags],
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def cpu_flags() -> frozenset[str]:
    """Every flag the CPU reports (/proc/cpuinfo), for conditions on machine facts."""
    return frozenset(_cpu()[1])


@cache
def _cpu() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, flags


@cache
def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    return {name: v for name in TOOLS if (v := distribution_version(name)) is not None}


@cache
def _module_distributions() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions providing it: a walk over every installed
    distribution's file list (0.4 s here), so once per process."""
    return metadata.packages_distributions()


@cache
def versions_for_modules(modules: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the distributions providing these top-level modules."""
    providers = _module_distributions()
    versions = {}
    for module in modules:
        for dist in providers.get(module, [module]):
            if (version := distribution_version(dist)) is not None:
                versions[dist] = version
    return versions
