"""torchvision classifiers, randomly initialised (no downloads), made informative.

resnet18 is the seed's model; mobilenet_v3_small brings depthwise convolutions, hardswish and
squeeze-excitation, operators resnet18 does not exercise. Inputs are random crops of the photos
scikit-learn ships (resized, flipped, ImageNet-normalised): i.i.d. noise images all pool to nearly the
same features, so a random-init network barely tells them apart (measured: bf16 error 0.50 and top-1
agreement 75% with noise inputs, 0.30 and 100% with crops, on resnet18 logits of spread 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from modelparity.spec import AxisRange, ModelSpec
from modelparity.zoo.informative import recalibrate_batchnorm, rescale_head

IMAGE_SIZE = 224
_CALIBRATION_SEED = 1234
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


@lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.float32) / 255.0 for image in load_sample_images().images]


def photo_crops(count: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """`count` random square crops of scikit-learn's sample photos, as normalised N x 3 x size x size."""
    crops = []
    for _ in range(count):
        photo = _photos()[rng.integers(len(_photos()))]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = torch.from_numpy(photo[top:top + side, left:left + side]).permute(2, 0, 1)[None]
        crop = nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                         align_corners=False)[0]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        crops.append((crop.permute(1, 2, 0).numpy() - _MEAN) / _STD)
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)


def preprocess_photo(image: Any) -> dict[str, np.ndarray]:
    """What the service does to an uploaded photo (and the harness on the reference side): RGB,
    bilinear resize to 224 x 224, scale to [0, 1], ImageNet normalisation, NCHW batch of one."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR),
                     dtype=np.float32) / 255.0
    return {"image": ((rgb - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)}


def _crop_inputs(sizes: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": photo_crops(sizes["batch"], rng)}


def _calibration_batches(count: int = 4, batch: int = 8) -> list[torch.Tensor]:
    rng = np.random.default_rng(_CALIBRATION_SEED)
    return [torch.from_numpy(photo_crops(batch, rng)) for _ in range(count)]


# Random-init backbones give features whose input-dependent part is small against their common part;
# the rescaled head amplifies that part to unit-order logits, and with it the rounding of reduced
# precision. Measured on this harness's inputs (2026-12-01, AMD EPYC with AVX-512 VNNI/BF16, worst of
# every format at batches 1 and 4; logits' RMS 1.6-1.9): fp16 SNR 46.0 dB, max abs 0.022 x scale;
# OpenVINO bf16 SNR 24.5 dB, cosine 0.9983, max abs 0.24 x scale, |gain - 1| 0.017 (on an Intel Xeon
# with AMX max abs 0.48, top-1 75% on a batch of 4: 2026-11-25); int8 formats that keep their top-1
# SNR 12.9 dB, cosine 0.975, max abs 1.04 x scale, |gain - 1| 0.047. The trained digits_cnn stays
# within the plain profiles (fp16 78 dB, bf16 59 dB, int8 29 dB).
_RANDOM_INIT_TOLERANCES = {
    "profile:fp16": {"scale_atol": 0.05, "min_snr_db": 35.0, "min_cosine": 0.9995,
                     "reason": "random-init backbone amplifies fp16 weight rounding (measured SNR 46 dB, "
                     "max abs 0.022 x scale)"},
    "profile:bf16": {"scale_atol": 0.4, "min_snr_db": 18.0, "min_cosine": 0.99, "max_gain_error": 0.05,
                     "min_top1": 0.6, "reason": "random-init backbone amplifies bf16 rounding (measured "
                     "SNR 24.5 dB, cosine 0.998, max abs 0.24 x scale, gain 0.983; 0.48 max abs on AMX)"},
    "profile:int8": {"scale_atol": 0.8, "min_snr_db": 10.0, "min_cosine": 0.95, "max_gain_error": 0.08,
                     "min_top1": 0.6,
                     "reason": "random-init backbone amplifies int8 weight rounding: formats that keep "
                     "their top-1 measured SNR 12.9-20 dB, cosine 0.975-0.996, max abs up to 1.04 x "
                     "scale; top-1 changed on 2 of 16 and 3 of 8 rows, whose top-1/top-2 margins "
                     "(0.04-0.13) are below that error; a broken artifact (random top-1) still fails"},
}


def _image_spec(name: str, module: nn.Module, description: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        module=module,
        example_inputs={"image": photo_crops(1, np.random.default_rng(0))},
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 32)},
        classifier_outputs=("logits",),
        make_inputs=_crop_inputs,
        preprocess=preprocess_photo,
        tolerances=_RANDOM_INIT_TOLERANCES,
        builtin=True,
        factory_reusable=True,  # seeded weights, data from installed packages: no file, no clock
        description=description,
    )


def resnet18() -> ModelSpec:
    """torchvision resnet18, weights=None, seed 0.

    BatchNorm statistics are recalibrated with train-mode passes over seeded photo crops, and the
    fc layer is rescaled and centred so logits spread over unit order and different inputs give
    different top-1 classes.
    """
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None)
    batches = _calibration_batches()
    recalibrate_batchnorm(module, batches)
    rescale_head(module, module.fc, batches)
    return _image_spec("resnet18", module, "torchvision resnet18, random init, BN recalibrated")


def mobilenet_v3_small() -> ModelSpec:
    """torchvision mobilenet_v3_small, weights=None, seed 0, made informative like resnet18.

    Without this its outputs are |y| <= 2e-9 and every tolerance passes; the last classifier layer
    is rescaled after BatchNorm recalibration.
    """
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.mobilenet_v3_small(weights=None)
    batches = _calibration_batches()
    recalibrate_batchnorm(module, batches)
    rescale_head(module, module.classifier[-1], batches)
    return _image_spec("mobilenet_v3_small", module,
                       "torchvision mobilenet_v3_small, random init, BN recalibrated")
