"""A small CNN trained at build time on scikit-learn's digits (shipped with scikit-learn, no download).

It is the zoo's model with real data and labels: the held-out split gives real inputs for parity
and real accuracy for precision drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from modelparity.spec import AxisRange, ModelSpec

_SEED = 0
_EPOCHS = 12


class DigitsCNN(nn.Module):
    """Two convolutions and a linear head over 1x8x8 images scaled to [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


CALIBRATION_SAMPLES = 64


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels); images N x 1 x 8 x 8 float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    labels = data.target.astype(np.int64)
    order = np.random.default_rng(_SEED).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, held = order[:cut], order[cut:]
    return images[train], labels[train], images[held], labels[held]


def _train() -> DigitsCNN:
    train_x, train_y, _, _ = digits_split()
    torch.manual_seed(_SEED)
    module = DigitsCNN()
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    order = torch.Generator().manual_seed(_SEED)
    module.train()
    for _ in range(_EPOCHS):
        for idx in torch.randperm(len(y), generator=order).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
            optimiser.step()
    return module.eval()


def _held_out_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    _, _, held_x, _ = digits_split()
    pick = rng.choice(len(held_x), size=sizes["batch"], replace=False)
    return {"image": held_x[pick]}


def _calibration_set() -> dict[str, np.ndarray]:
    """64 training images: quantisers calibrate on data like the deployment's, never on the held-out
    split the precision suite measures accuracy on."""
    train_x, _, _, _ = digits_split()
    return {"image": train_x[:CALIBRATION_SAMPLES]}


def preprocess_digit(image: Any) -> dict[str, np.ndarray]:
    """An uploaded digit (dark background, bright ink, as the data set's images): grayscale, bilinear
    resize to 8 x 8, scale to [0, 1], batch of one."""
    from PIL import Image

    gray = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32)
    return {"image": (gray / 255.0)[None, None].astype(np.float32)}


def _held_out_set() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The whole held-out split (360 images) with its labels, for suites/precision."""
    _, _, held_x, held_y = digits_split()
    return {"image": held_x}, held_y


def digits_cnn() -> ModelSpec:
    """DigitsCNN trained for a few seconds on the digits training split; inputs come from held-out."""
    module = _train()
    _, _, held_x, _ = digits_split()
    return ModelSpec(
        name="digits_cnn",
        module=module,
        example_inputs={"image": held_x[:1]},
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 64)},
        classifier_outputs=("logits",),
        make_inputs=_held_out_inputs,
        calibration=_calibration_set,
        preprocess=preprocess_digit,
        evaluation=_held_out_set,
        builtin=True,
        factory_reusable=True,  # seeded weights, data from installed packages: no file, no clock
        description="CNN trained on scikit-learn digits, held-out images as inputs",
    )


def held_out_accuracy(module: nn.Module) -> float:
    """Top-1 accuracy of `module` on the held-out split."""
    _, _, held_x, held_y = digits_split()
    with torch.no_grad():
        predicted = module(torch.from_numpy(held_x)).argmax(1).numpy()
    return float((predicted == held_y).mean())
