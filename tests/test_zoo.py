"""The built-in models are informative: a wrong export would fail against them."""

import functools

import numpy as np
import pytest
import torch

from modelparity.checks.compare import uninformative_reasons
from modelparity.checks.tolerance import PROFILES
from modelparity.models import load_spec
from modelparity.zoo import BUILTIN_MODELS


@functools.cache
def _logits(name: str) -> np.ndarray:
    spec = load_spec(BUILTIN_MODELS[name])
    inputs = spec.inputs_for({"batch": 4}, seed=7)
    with torch.no_grad():
        return spec.module(*[torch.from_numpy(v) for v in inputs.values()]).numpy()


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
@pytest.mark.parametrize("profile", ["fp32", "fp16", "bf16"])
def test_builtin_model_is_informative(name, profile):
    """Judged under each plain profile: the model overrides only widen what they measured."""
    output = _logits(name)
    assert uninformative_reasons({"logits": output}, lambda _: PROFILES[profile], ("logits",)) == []
    top1 = output.reshape(-1, output.shape[-1]).argmax(1)
    assert np.unique(top1).size > 1


def test_digits_cnn_learns_the_held_out_split():
    from modelparity.zoo.digits import digits_cnn, held_out_accuracy

    assert held_out_accuracy(digits_cnn().module) >= 0.95


def test_digits_calibrates_on_training_digits_never_on_the_evaluation_split():
    from modelparity.models import calibration_inputs
    from modelparity.zoo.digits import digits_cnn

    spec = digits_cnn()
    calibration = calibration_inputs(spec)["image"]
    held_out = spec.evaluation()[0]["image"]
    assert calibration.shape == (64, 1, 8, 8)
    assert not (calibration[:, None] == held_out[None]).all(axis=(2, 3, 4)).any(), "an image in both"
