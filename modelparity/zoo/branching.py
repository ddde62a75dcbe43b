"""A model whose forward branches on a dimension: odd-length signals are padded to even length.

Tracing exporters record only the branch the export input took, so an export traced at an even
length silently drops the padding at odd lengths (the output is one step short, and the values
shift). torch.export refuses the data-dependent branch outright. suites/dynamic must catch both:
it draws odd lengths the trace never saw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelparity.spec import AxisRange, ModelSpec


class PadToEven(nn.Module):
    """Conv1d with stride 2 over (batch, 4, length); pads odd lengths so no sample is dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, kernel_size=2, stride=2)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        if signal.shape[-1] % 2:
            signal = functional.pad(signal, (0, 1))
        return torch.tanh(self.conv(signal)) * 3.0


def pad_to_even() -> ModelSpec:
    """PadToEven, seed 0. Its output length, ceil(length / 2), is no axis of its own, so only the
    batch relation is declared; the comparison with eager at odd lengths does the catching."""
    torch.manual_seed(0)
    return ModelSpec(
        name="pad_to_even",
        module=PadToEven().eval(),
        example_inputs={"signal": np.random.default_rng(0).standard_normal((2, 4, 16)).astype(np.float32)},
        output_names=["features"],
        dynamic_axes={"signal": {0: "batch", 2: "length"}, "features": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 8), "length": AxisRange(4, 64)},
        builtin=True,
        factory_reusable=True,  # seeded weights, data from installed packages: no file, no clock
        description="branches on the input length (pads odd lengths): tracing freezes the branch",
    )
