"""Tiny user models for the harness's own tests: one clean, and several deliberately broken specs."""

import numpy as np
import torch
from torch import nn

from modelparity import AxisRange, ModelSpec


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).mean((2, 3)))


class Overflowing(Tiny):
    """Tiny's logits through (300 x)^2 and back: the square reaches about 1e6, past FP16's 65504,
    while the output (the logits again) is small."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = super().forward(image)
        energy = (logits * 300.0) ** 2
        return torch.sign(logits) * torch.sqrt(energy + 1.0) / 300.0


def _with_forward(module_class: type, name: str) -> ModelSpec:
    """Tiny's spec and weights with another forward (a subclass of Tiny)."""
    spec = build(name=name)
    module = module_class().eval()
    module.load_state_dict(spec.module.state_dict())
    spec.module = module
    return spec


def build_fp16_overflow() -> ModelSpec:
    return _with_forward(Overflowing, "tiny_overflow")


class LeaksAcrossTheBatchWhenExported(Tiny):
    """Per-sample in torch eager; in an exported graph (torch.onnx.is_in_onnx_export) its features
    are centred on the batch's mean: each sample's answer then depends on the others in its batch,
    the bug of a normalisation that reads batch statistics at inference."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(image)).mean((2, 3))
        if torch.onnx.is_in_onnx_export():
            features = features - features.mean(0, keepdim=True) + features.mean()
        return self.head(features)


def build_batch_leak() -> ModelSpec:
    return _with_forward(LeaksAcrossTheBatchWhenExported, "tiny_batch_leak")


SIDE = 16


def preprocess_image(image) -> dict[str, np.ndarray]:
    """An uploaded image as the tiny model's input: RGB, 16 x 16, scaled to [0, 1], NCHW."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32) / 255
    return {"image": rgb.transpose(2, 0, 1)[None].astype(np.float32)}


def build_with_preprocess() -> ModelSpec:
    """The tiny model with image pre-processing, for the HTTP service's /predict."""
    return build(name="tiny_images", preprocess=preprocess_image)


def build(**overrides) -> ModelSpec:
    torch.manual_seed(0)
    module = Tiny().eval()
    with torch.no_grad():
        module.head.weight.mul_(20.0)
    values = dict(
        name="tiny",
        module=module,
        example_inputs={"image": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)},
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 8)},
        classifier_outputs=("logits",),
    )
    values.update(overrides)
    return ModelSpec(**values)


def build_tight_tolerance() -> ModelSpec:
    """Tiny, with a tolerance tighter than torch float32's own distance from float64."""
    return build(tolerances={"*": {"atol": 1e-12, "rtol": 0.0,
                                   "reason": "self-test: below the reference's noise floor"}})


class Float32Inside(Tiny):
    """Multiplies by a float32 matrix made inside forward(): runs in float32, not in float64."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return super().forward(image) @ torch.eye(5, dtype=torch.float32)


def build_float32_inside() -> ModelSpec:
    torch.manual_seed(0)
    return build(module=Float32Inside().eval())


def build_non_square() -> ModelSpec:
    """Height 12, width 20: a layout mix-up cannot hide behind equal dimensions."""
    spec = build(name="tiny_wide")
    spec.example_inputs["image"] = np.random.default_rng(0).standard_normal((1, 3, 12, 20)).astype(np.float32)
    return spec


def build_square_sizes() -> ModelSpec:
    """Square images whose side is a multiple of 4: one axis name on two dims, and a step."""
    spec = build(name="tiny_square")
    spec.dynamic_axes = {"image": {0: "batch", 2: "side", 3: "side"}, "logits": {0: "batch"}}
    spec.axis_ranges = {"batch": AxisRange(1, 8), "side": AxisRange(8, 32, multiple_of=4)}
    return spec


def build_wrong_type():
    return {"name": "tiny"}


def build_bad_axis() -> ModelSpec:
    return build(dynamic_axes={"imgae": {0: "batch"}})


def build_axis_out_of_rank() -> ModelSpec:
    return build(dynamic_axes={"image": {5: "batch"}})


def build_raises() -> ModelSpec:
    raise RuntimeError("weights file missing")


class ProducesNaN(Tiny):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.log(super().forward(image) - 1e6)


def build_nan() -> ModelSpec:
    return build(module=ProducesNaN().eval())


def build_uninformative() -> ModelSpec:
    """A bias that outweighs the input's part a thousand to one: every input gets the same top-1
    class, so a format that ignored its input would agree with it."""
    spec = build()
    with torch.no_grad():
        spec.module.head.weight.mul_(1e-3)
        spec.module.head.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0]))
    return spec


def _scaled(scale: float) -> ModelSpec:
    """Tiny with its logits multiplied by `scale`: the pass rule must follow the output's scale."""
    spec = build(name=f"tiny_x{scale:g}")
    with torch.no_grad():
        spec.module.head.weight.mul_(scale)
        spec.module.head.bias.mul_(scale)
    return spec


def build_milli() -> ModelSpec:
    return _scaled(1e-3)


def build_kilo() -> ModelSpec:
    return _scaled(1e3)


class DropoutLeftOn(Tiny):
    """training left on in forward: every call drops a different tenth of the features."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(image)).mean((2, 3))
        return self.head(torch.nn.functional.dropout(features, p=0.1, training=True))


def build_dropout() -> ModelSpec:
    return _with_forward(DropoutLeftOn, "tiny_dropout")


class ListOfDicts(Tiny):
    """Returns a structure the harness cannot name (detection models do: a list of dicts)."""

    def forward(self, image: torch.Tensor):
        return [{"logits": super().forward(image)}]


def build_list_of_dicts() -> ModelSpec:
    return _with_forward(ListOfDicts, "tiny_list_of_dicts")
