"""A 2-layer transformer encoder over token ids, with dynamic batch and sequence axes.

It exercises attention, LayerNorm, GELU and the reshapes exporters get wrong when a dimension is
dynamic (the legacy exporter bakes the export sequence length into a Reshape).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modelparity.spec import AxisRange, ModelSpec

VOCAB = 64
CLASSES = 16
_WIDTH = 32


class TinyTransformer(nn.Module):
    """Embedding, learned positions, two encoder layers, a per-token classifier."""

    def __init__(self, max_len: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, _WIDTH)
        self.position = nn.Parameter(torch.randn(1, max_len, _WIDTH) * 0.5)
        layer = nn.TransformerEncoderLayer(_WIDTH, nhead=4, dim_feedforward=64, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(_WIDTH, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens) + self.position[:, : tokens.shape[1]]
        return self.head(self.encoder(hidden))


def tiny_transformer() -> ModelSpec:
    """TinyTransformer, seed 0; the head is scaled so per-token logits have unit-order spread."""
    torch.manual_seed(0)
    module = TinyTransformer().eval()
    with torch.no_grad():
        module.head.weight.mul_(4.0)
    example = np.random.default_rng(0).integers(0, VOCAB, size=(2, 16), dtype=np.int64)
    return ModelSpec(
        name="tiny_transformer",
        module=module,
        example_inputs={"tokens": example},
        output_names=["logits"],
        dynamic_axes={"tokens": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
        axis_ranges={"batch": AxisRange(1, 16), "sequence": AxisRange(2, 64)},
        classifier_outputs=("logits",),
        builtin=True,
        factory_reusable=True,  # seeded weights, data from installed packages: no file, no clock
        description="2-layer transformer encoder over token ids, per-token logits",
    )
