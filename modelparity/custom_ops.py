"""Operators a model calls through `torch.library` that no exporter or runtime knows.

A spec declares each one as a `CustomOp`: the torch operator, the ONNX node it becomes, and what
every step of a deployment needs to carry it: the ONNX schema (so onnx.checker and onnxscript know
the node), the TorchScript-based exporter's symbolic, the dynamo exporter's translation, and the
kernel library ONNX Runtime loads. Formats whose converters cannot carry the operator (OpenVINO,
TensorFlow, LibTorch without the kernel) are reported unsupported with the converter's own error:
`unsupported_reason` recognises that error, and only for formats that do not claim the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CustomOp:
    """One custom operator and its mappings. Every callable must be a module-level function (the
    root artifact pickles them by reference, so converter processes and services get the same).

    torch_op: "namespace::name", as registered with torch.library.
    onnx_op: "domain::OpType", the node both exporters write.
    onnx_schema: returns the node's onnx.defs.OpSchema (inputs, outputs, attributes).
    legacy_symbolic: for torch.onnx.register_custom_op_symbolic (the TorchScript-based exporter).
    dynamo_translation: the dynamo exporter's custom_translation_table entry (an onnxscript
        function writing the node).
    onnxruntime_library: makes the kernel available to ONNX Runtime and returns the path of the
        custom-op library to register (for a Python kernel, `python_kernel` does both).
    """

    torch_op: str
    onnx_op: str
    onnx_schema: Callable[[], Any]
    legacy_symbolic: Callable[..., Any]
    dynamo_translation: Callable[..., Any]
    onnxruntime_library: Callable[[], str]

    @property
    def names(self) -> tuple[str, str, str]:
        """How converters' errors name it: the torch operator (as TorchScript and as torch.ops
        print it: OpenVINO says `namespace.name.default`), and the ONNX op type."""
        return self.torch_op, self.torch_op.replace("::", "."), self.onnx_op.partition("::")[2]

    def describe(self) -> str:
        return f"{self.torch_op} (ONNX {self.onnx_op})"


def register_schemas(ops: Iterable[CustomOp]) -> None:
    """Make onnx (checker, shape inference) and onnxscript know the ops' ONNX nodes."""
    from onnx import defs

    for op in ops:
        domain, _, op_type = op.onnx_op.partition("::")
        if not defs.has(op_type, domain):
            defs.register_schema(op.onnx_schema())


def export_mappings(ops: Sequence[CustomOp], dynamo: bool, opset: int | None) -> dict[str, Any]:
    """Register what the chosen exporter needs; returns the torch.onnx.export keyword it takes
    (the dynamo exporter's custom_translation_table; nothing for the legacy one)."""
    import torch

    register_schemas(ops)
    if dynamo:
        return {"custom_translation_table": {torch_overload(op): op.dynamo_translation for op in ops}}
    for op in ops:
        torch.onnx.register_custom_op_symbolic(op.torch_op, op.legacy_symbolic, opset or 9)
    return {}


def torch_overload(op: CustomOp) -> Any:
    import torch

    namespace, _, name = op.torch_op.partition("::")
    return getattr(getattr(torch.ops, namespace), name).default


def onnxruntime_libraries(ops: Iterable[CustomOp]) -> list[str]:
    """The custom-op libraries an InferenceSession must register, each once."""
    return list(dict.fromkeys(op.onnxruntime_library() for op in ops))


_PYTHON_KERNELS: dict[str, Callable[..., np.ndarray]] = {}


def python_kernel(op_type: str, kernel: Callable[..., np.ndarray], attributes: Mapping[str, type]
                  ) -> str:
    """Register `kernel(x, **attributes)` as onnxruntime-extensions' Python op `op_type` (domain
    ai.onnx.contrib, float32 in and out) once per process; returns the library to register.
    onnxruntime-extensions keeps one kernel per op type in a process, so a second, different kernel
    for the same op type is refused rather than silently shadowed."""
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as error:
        raise RuntimeError(f"the Python kernel of custom op {op_type!r} needs onnxruntime-extensions "
                           f"({error}): pip install 'modelparity[onnx]'") from error

    known = _PYTHON_KERNELS.get(op_type)
    if known is not None and known is not kernel:
        raise RuntimeError(f"onnxruntime-extensions op {op_type!r} already has the kernel "
                           f"{known.__module__}.{known.__qualname__} in this process; it cannot also "
                           f"run {kernel.__module__}.{kernel.__qualname__}")
    if known is None:
        types = {float: PyCustomOpDef.dt_float, int: PyCustomOpDef.dt_int64,
                 str: PyCustomOpDef.dt_string}
        onnx_op(op_type=op_type, inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float],
                attrs={name: types[kind] for name, kind in attributes.items()})(kernel)
        _PYTHON_KERNELS[op_type] = kernel
    return get_library_path()


def unsupported_reason(ops: Sequence[CustomOp], format_id: str, failure: str) -> str | None:
    """The verdict 'unsupported' for a failure whose text (the converter's or runtime's own error)
    names one of the model's custom ops; None when it names none (then it is a plain failure)."""
    named = [op for op in ops if any(name in failure for name in op.names)]
    if not named:
        return None
    line = next((ln.strip() for ln in failure.splitlines()
                 if any(name in ln for op in named for name in op.names)), "")
    return (f"unsupported: {format_id} cannot carry the custom operator "
            f"{', '.join(op.describe() for op in named)}; its error: {line[:400]}")
