"""What actually ran, held against what the format declares.

A runtime may quietly run something other than what was asked: ONNX Runtime places nodes on the CPU
when a provider cannot take them, OpenVINO computes in bf16 on a CPU that has it unless told f32,
torch computes float32 matmuls in bf16/TF32 when a flag allows it, a TFLite delegate may refuse every
node. A parity result is only about the format it names if what ran is what the format declares, so
each runner reports, in its `facts`, what its runtime says ran:

  devices            the devices that ran the model's nodes ("CPU", "CUDA", "TensorRT")
  device_nodes       nodes per execution provider, where the runtime says (ONNX Runtime)
  compute_precision  the precision the runtime computes float32 work in ("f32", "bf16", "f16",
                     "tf32"); absent where the runtime does not report one
  requested          what the runner asked the runtime for, by fact name (e.g. {"compute_precision":
                     "bf16"}); the runtime's report must match it

and `mismatches` compares those with the format's declaration (Format.device, Format.precision).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The compute precisions a tolerance profile admits. An FP16 artifact may compute in f32 (ONNX
# Runtime's and OpenVINO's CPU plugins upcast), never below its own precision; INT8 formats compute
# their float parts as their runtime chooses, judged by their own (loose) profile.
PROFILE_COMPUTE: dict[str, set[str] | None] = {
    "fp32": {"f32"},
    "fp16": {"f16", "f32"},
    "bf16": {"bf16"},
    "tf32": {"tf32"},
    "int8": None,
}

DEVICE_KINDS: dict[str, set[str]] = {"cpu": {"CPU"}, "cuda": {"CUDA", "TensorRT"}}

# ONNX Runtime's CUDA and TensorRT providers deliberately leave shape computations on the CPU (they
# feed shapes, not data); a node of any other type on the CPU is a fallback.
SHAPE_OPS = frozenset({"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast",
                       "Range", "ConstantOfShape", "Reshape", "Equal", "Where", "Expand", "Identity",
                       "MemcpyToHost", "MemcpyFromHost"})

_PRECISION_NAMES = {"f32": "f32", "float32": "f32", "fp32": "f32", "bf16": "bf16", "bfloat16": "bf16",
                    "f16": "f16", "float16": "f16", "fp16": "f16", "tf32": "tf32"}


def precision_name(value: Any) -> str:
    """A runtime's name for a precision ('float32', 'FP32', "<Type: 'float32'>") as f32/bf16/f16/tf32."""
    text = str(getattr(value, "to_string", lambda: value)()).lower()
    for name, short in _PRECISION_NAMES.items():
        if text == name or f"'{name}'" in text:
            return short
    return text


def mismatches(format_id: str, device: str, profile: str, facts: Mapping[str, Any]) -> list[str]:
    """How what ran differs from what `format_id` declares (device, profile, requested settings)."""
    problems = []
    expected_devices = DEVICE_KINDS.get(device, {device.upper()})
    devices = facts.get("devices")
    if devices is not None:
        strays = sorted(set(devices) - expected_devices)
        if strays:
            problems.append(f"{format_id} declares device {device}, but nodes ran on {strays}"
                            + _fallback_text(facts))
    compute = facts.get("compute_precision")
    allowed = PROFILE_COMPUTE.get(profile)
    if compute is not None and allowed is not None and compute not in allowed:
        problems.append(f"{format_id} declares precision {profile}, but its runtime computes in "
                        f"{compute} ({facts.get('compute_precision_source', 'runtime report')})")
    for name, asked in facts.get("requested", {}).items():
        if facts.get(name) != asked:
            problems.append(f"{format_id} asked its runtime for {name} {asked}, the runtime reports "
                            f"{facts.get(name)}")
    return problems


def _fallback_text(facts: Mapping[str, Any]) -> str:
    fallback = facts.get("cpu_fallback_nodes")
    return f" (fell back to the CPU: {', '.join(fallback[:10])})" if fallback else ""


def summary(facts: Mapping[str, Any]) -> str:
    """One line for a report cell: devices and compute precision."""
    devices = ",".join(facts.get("devices", [])) or "?"
    compute = facts.get("compute_precision", "not reported")
    return f"{devices} · {compute}"


def torch_facts(device: str = "cpu") -> dict[str, Any]:
    """torch's precision flags and what they make float32 work compute in on `device`.

    torch.set_float32_matmul_precision('medium') lets oneDNN compute float32 matmuls in bf16 on a CPU
    that has it (and TF32 on CUDA); torch.backends.cudnn.allow_tf32 (on by default) lets CUDA
    convolutions use TF32.
    """
    import torch

    backends = torch.backends
    flags = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn_matmul_fp32_precision": _flag(lambda: backends.mkldnn.matmul.fp32_precision),
        "mkldnn_conv_fp32_precision": _flag(lambda: backends.mkldnn.conv.fp32_precision),
        "cuda_matmul_allow_tf32": _flag(lambda: backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _flag(lambda: backends.cudnn.allow_tf32),
    }
    if device == "cpu":
        allows_bf16 = ("bf16" in (flags["mkldnn_matmul_fp32_precision"], flags["mkldnn_conv_fp32_precision"])
                       or flags["float32_matmul_precision"] == "medium")
        has_bf16 = bool(_flag(lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported()))
        compute = "bf16" if allows_bf16 and has_bf16 else "f32"
        source = ("torch precision flags (bf16 allowed, and this CPU has it)" if compute == "bf16"
                  else "torch precision flags" + (" (bf16 allowed, but this CPU has none)"
                                                  if allows_bf16 else ""))
    else:
        tf32 = (flags["cuda_matmul_allow_tf32"] is True or flags["cudnn_allow_tf32"] is True
                or flags["float32_matmul_precision"] in ("high", "medium"))
        compute, source = ("tf32" if tf32 else "f32"), "torch TF32 flags"
    return {"devices": [device.upper() if device == "cpu" else "CUDA"], "compute_precision": compute,
            "compute_precision_source": source, "torch_flags": flags}


def _flag(read: Any) -> Any:
    try:
        return read()
    except (AttributeError, RuntimeError):
        return None
