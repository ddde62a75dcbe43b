"""A team's own model, as modelparity sees it: a factory returning a ModelSpec.

The classifier accumulates its features as a raw energy (the sum over the image, x 1e5, as its
sensor pipeline reports it) before normalising: the energy passes FP16's largest number, 65504, and
its FP16 export saturates there, answering logits hundreds of times off. The project declares that
as an expected failure in pyproject.toml (it ships FP32 on the edge) rather than finding it in the
field.
"""

import numpy as np
import torch
from torch import nn

from modelparity import AxisRange, ModelSpec

ENERGY_UNIT = 1e5


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        energy = torch.relu(self.conv(image)).sum((2, 3)) * ENERGY_UNIT
        return self.head(energy / (ENERGY_UNIT * image.shape[2] * image.shape[3]))


def build() -> ModelSpec:
    torch.manual_seed(0)
    module = Classifier().eval()
    with torch.no_grad():
        module.head.weight.mul_(20.0)  # logits of a few units, so the classes differ per input
    return ModelSpec(
        name="classifier",
        module=module,
        example_inputs={"image": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)},
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 8)},
        classifier_outputs=("logits",),
    )
