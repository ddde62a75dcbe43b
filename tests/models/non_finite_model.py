"""A model the HTTP service must answer without a bare 500: NaN, +Inf and -Inf in `logits` for every
finite input (beside a finite `mean`), and a RuntimeError from the runtime for an input above
RAISE_ABOVE."""

import torch
from torch import nn

from modelparity import AxisRange, ModelSpec

RAISE_ABOVE = 1000.0


class NonFinite(nn.Module):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool((image > RAISE_ABOVE).any()):
            raise RuntimeError(f"input above {RAISE_ABOVE:g}: the runtime gives up")
        mean = image.mean((1, 2, 3))
        ones = torch.ones_like(mean)
        logits = torch.stack([mean, torch.log(-ones), ones / 0, -ones / 0], 1)  # finite, NaN, Inf, -Inf
        return logits, mean[:, None]


def build() -> ModelSpec:
    return ModelSpec(
        name="non_finite", module=NonFinite().eval(),
        example_inputs={"image": torch.zeros(1, 3, 4, 4).numpy()},
        output_names=["logits", "mean"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "mean": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 4)})
