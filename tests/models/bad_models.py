"""User models that break their own spec in ways only running them shows: each must leave a complete
report whose records name the cause (tests/test_faults.py)."""

import torch

from modelparity import ModelSpec
from tests.models.tiny_model import Tiny, build


def build_wrong_output_count() -> ModelSpec:
    """The spec names two outputs; forward() returns one tensor."""
    return build(name="bad", output_names=["logits", "features"],
                 dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})


class NanForLargeBatches(Tiny):
    """Fine on one sample; NaN in every batch of more (a division by batch - 1 somewhere)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = super().forward(image)
        spread = logits.std(0, keepdim=True) if image.shape[0] > 1 else torch.ones_like(logits)
        return logits / (spread * 0.0) * 0.0 + logits if image.shape[0] > 1 else logits / spread


def build_nan_for_large_batches() -> ModelSpec:
    spec = build(name="bad")
    module = NanForLargeBatches().eval()
    module.load_state_dict(spec.module.state_dict())
    spec.module = module
    return spec
