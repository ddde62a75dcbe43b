"""A model with a custom operator: a fused activation registered with torch.library.

`scaled_silu(x, alpha) = alpha * x * sigmoid(x)` is one fused op as a deployment would write it (a
CUDA or C++ kernel in practice). No exporter knows `modelparity_zoo::scaled_silu`: the spec carries
its mapping to the ONNX node `ai.onnx.contrib::ScaledSilu` for both exporters, and ONNX Runtime runs
that node with a NumPy kernel through onnxruntime-extensions. OpenVINO, TensorFlow and LibTorch
have no kernel for it: they are reported unsupported with their converter's error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from modelparity.custom_ops import CustomOp, python_kernel
from modelparity.spec import AxisRange, ModelSpec

ONNX_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions runs Python kernels in this domain only


@torch.library.custom_op("modelparity_zoo::scaled_silu", mutates_args=())
def scaled_silu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * x * torch.sigmoid(x)


@scaled_silu.register_fake
def _scaled_silu_shape(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.empty_like(x)


def scaled_silu_schema() -> Any:
    from onnx import defs

    return defs.OpSchema(
        "ScaledSilu", ONNX_DOMAIN, 1, doc="alpha * X * sigmoid(X), elementwise",
        inputs=[defs.OpSchema.FormalParameter("X", "T")],
        outputs=[defs.OpSchema.FormalParameter("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float32 only (the kernel's type)")],
        attributes=[defs.OpSchema.Attribute("alpha", defs.OpSchema.AttrType.FLOAT, "scale")])


def scaled_silu_symbolic(g: Any, x: Any, alpha: Any) -> Any:
    """The TorchScript-based exporter's mapping (alpha arrives as a constant node)."""
    from torch.onnx import symbolic_helper

    value = symbolic_helper._maybe_get_const(alpha, "f")
    return g.op(f"{ONNX_DOMAIN}::ScaledSilu", x, alpha_f=float(value)).setType(x.type())


def scaled_silu_translation(x: Any, alpha: float) -> Any:
    """The dynamo exporter's mapping (an onnxscript function; the schema must be registered)."""
    import onnxscript

    return onnxscript.values.Opset(ONNX_DOMAIN, 1).ScaledSilu(x, alpha=alpha)


def scaled_silu_kernel(x: np.ndarray, **attributes: float) -> np.ndarray:
    """What ONNX Runtime runs for the node: float32 in, float32 out."""
    alpha = np.float32(attributes["alpha"])
    return (alpha * x / (np.float32(1) + np.exp(-x))).astype(np.float32)


def scaled_silu_library() -> str:
    return python_kernel("ScaledSilu", scaled_silu_kernel, {"alpha": float})


SCALED_SILU = CustomOp(
    torch_op="modelparity_zoo::scaled_silu", onnx_op=f"{ONNX_DOMAIN}::ScaledSilu",
    onnx_schema=scaled_silu_schema, legacy_symbolic=scaled_silu_symbolic,
    dynamo_translation=scaled_silu_translation, onnxruntime_library=scaled_silu_library)


class ScaledSiluCNN(nn.Module):
    """Two convolutions, each followed by the custom activation, pooled to 4x4 and mapped to 10
    class scores (pooling to 1x1 leaves a random-init model predicting one class for every input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(16 * 4 * 4, 10)
        # Initialised so that, like a trained classifier's, class scores spread over a few units and
        # the top class depends on the input: PyTorch's default init gives scores within 0.2 of each
        # other (any INT8 tolerance would accept whatever a runtime returned), and the activation's
        # positive mean, through the head, favours one class for every input unless each class's
        # weights sum to zero.
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        with torch.no_grad():
            nn.init.normal_(self.head.weight, std=0.5)
            self.head.weight -= self.head.weight.mean(dim=1, keepdim=True)
            self.head.bias.zero_()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.ops.modelparity_zoo.scaled_silu(self.conv1(image), 1.7)
        features = torch.ops.modelparity_zoo.scaled_silu(self.conv2(features), 0.6)
        return self.head(self.pool(features).flatten(1))


def scaled_silu_cnn(custom_op: CustomOp = SCALED_SILU) -> ModelSpec:
    """ScaledSiluCNN, seed 0, on 32x32 RGB images; `custom_op` lets a self-test swap the mapping."""
    torch.manual_seed(0)
    return ModelSpec(
        name="scaled_silu_cnn",
        module=ScaledSiluCNN().eval(),
        example_inputs={"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)},
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 8)},
        classifier_outputs=("logits",),
        custom_ops=(custom_op,),
        builtin=True,
        factory_reusable=True,  # seeded weights, data from installed packages: no file, no clock
        description="calls a torch.library operator (fused scaled SiLU) that no exporter knows",
    )
