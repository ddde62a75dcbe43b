"""The pass rule knows the output's scale: at any scale, a clean output of each precision passes and
an uncorrelated, offset or wrongly scaled one fails (the end-to-end version, through real runtimes,
is tests/test_verdict_end_to_end.py)."""

import numpy as np
import pytest

from modelparity.checks.compare import compare
from modelparity.checks.noise_floor import NoiseFloor
from modelparity.checks.noise_floor import apply as apply_floor
from modelparity.checks.tolerance import PROFILES

SCALES = (1e-3, 1.0, 1e3)
# What a clean format of each precision adds, relative to the output's RMS (the zoo's measured
# SNRs, README "How a check decides", sit above these: fp16 >= 60 dB, bf16 >= 35 dB, int8 >= 20 dB).
CLEAN_NOISE = {"fp32": 1e-6, "fp16": 5e-4, "bf16": 5e-3, "tf32": 5e-4, "int8": 0.05}


def _reference(scale: float, shape=(8, 10)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * scale + 0.3 * scale).astype(np.float32)


def _judge(ref, out, profile, classifier=()):
    return compare({"y": ref}, {"y": out.astype(np.float32)}, lambda _: PROFILES[profile],
                   f"{profile} vs torch", classifier)


def _broken(ref: np.ndarray, kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "uncorrelated":
        return rng.permutation(ref.ravel()).reshape(ref.shape)
    if kind == "offset 3% of range":
        return ref + 0.03 * float(ref.max() - ref.min())
    if kind == "scaled x1.1":
        return ref * 1.1
    if kind == "scaled x0.9":
        return ref * 0.9
    raise AssertionError(kind)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_clean_output_passes_at_any_scale(profile, scale):
    ref = _reference(scale)
    noise = np.random.default_rng(2).standard_normal(ref.shape) * CLEAN_NOISE[profile]
    out = ref + noise * float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
    result = _judge(ref, out, profile)
    assert result.passed, result.message()


@pytest.mark.parametrize("kind", ["uncorrelated", "offset 3% of range", "scaled x1.1", "scaled x0.9"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_broken_output_fails_at_any_scale(profile, scale, kind):
    ref = _reference(scale)
    result = _judge(ref, _broken(ref, kind), profile)
    assert not result.passed, f"{kind} passed {profile} at scale {scale}:\n{result.message()}"


@pytest.mark.parametrize("profile", ["bf16", "int8"])
def test_small_probabilities_with_no_top1_agreement_fail(profile):
    """The issue's case: a classifier whose probabilities are all below 4e-3, and a run that keeps
    their size but not their order."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((16, 300))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    shuffled = probs[:, rng.permutation(300)]
    result = _judge(probs, shuffled, profile, classifier=("y",))
    assert not result.passed and "cosine" in result.message()


def test_integer_outputs_are_exact_whatever_the_profile():
    ref = np.arange(20, dtype=np.int64).reshape(4, 5)
    out = ref.copy()
    out[1, 1] += 1
    result = compare({"y": ref}, {"y": out}, lambda _: PROFILES["int8"], "int8 vs torch")
    assert not result.passed and "must be exact" in result.message()
    assert compare({"y": ref}, {"y": ref.copy()}, lambda _: PROFILES["int8"], "x").passed


def test_a_dtype_that_differs_fails_and_still_reports_the_values():
    ref = _reference(1.0)
    result = compare({"y": ref}, {"y": ref.astype(np.float16) + np.float16(0.5)},
                     lambda _: PROFILES["fp16"], "fp16 vs torch")
    message = result.message()
    assert not result.passed and "dtype float16, but the reference has float32" in message
    assert result.outputs[0].max_abs == pytest.approx(0.5, rel=1e-2) and "max abs 0.5" in message


def test_within_the_noise_floor_the_gates_do_not_judge():
    """An output whose whole difference is the reference's own noise passes, even where that noise
    is a large share of a tiny output (it is vacuous, and the informativeness check says so)."""
    ref = _reference(1e-14)
    out = ref + np.float32(3e-15)
    tolerance = apply_floor(PROFILES["fp32"], NoiseFloor("y", float64_abs=1e-15, threads_abs=0.0))
    assert compare({"y": ref}, {"y": out}, lambda _: tolerance, "x").passed
    assert not _judge(ref, out, "fp32").passed  # without the floor: 30% of the scale off


def test_class_axis_need_not_be_last():
    ref = _reference(1.0, shape=(2, 5, 4, 4))  # segmentation: classes on axis 1
    out = ref.copy()
    out[:, [0, 1]] = out[:, [1, 0]]  # swap two classes everywhere
    result = compare({"y": ref}, {"y": out}, lambda _: PROFILES["int8"], "x", {"y": 1})
    stats = result.outputs[0]
    assert stats.classifier_rows == 32 and stats.top1_agreement < 0.9 and not result.passed
