"""The comparison: structure first, then statistics, a verdict, and a message a user can act on."""

from dataclasses import replace

import numpy as np
import pytest

from modelparity.checks.compare import compare, uninformative_reasons
from modelparity.checks.tolerance import PROFILES

FP32 = PROFILES["fp32"]


def _compare(ref, out, tol=FP32, classifier=()):
    return compare({"y": ref}, {"y": out}, lambda _: tol, "fmt vs torch", classifier)


def _logits(seed=0, shape=(4, 10)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_identical_outputs_pass_with_zero_error():
    ref = _logits()
    result = _compare(ref, ref.copy())
    assert result.passed
    assert result.outputs[0].max_abs == 0 and result.outputs[0].cosine == pytest.approx(1.0)


def test_one_perturbed_element_fails_and_is_located():
    ref = _logits()
    out = ref.copy()
    out[2, 7] += 0.01
    result = _compare(ref, out)
    stats = result.outputs[0]
    assert not result.passed
    assert stats.max_abs_index == (2, 7)
    assert stats.out_of_tolerance == 1
    assert stats.max_abs == pytest.approx(0.01, rel=1e-3)
    message = result.message()
    assert "1/40 (2.5%) out of tolerance" in message
    assert "at (2, 7)" in message and "would pass elementwise with atol>=" in message


def test_required_atol_is_enough_to_pass():
    ref = _logits()
    out = ref + np.random.default_rng(1).normal(0, 1e-3, ref.shape).astype(np.float32)
    failing = _compare(ref, out)
    needed = failing.outputs[0].required_atol
    assert not failing.passed
    assert _compare(ref, out, replace(FP32, atol=needed * 1.0001)).outputs[0].out_of_tolerance == 0


@pytest.mark.parametrize("out, problem", [
    (np.zeros((4, 9), np.float32), "shape (4, 9), but the reference has (4, 10)"),
    (np.zeros((10, 4), np.float32), "shape (10, 4)"),
])
def test_structure_is_checked_before_values(out, problem):
    result = _compare(_logits(), out)
    assert not result.passed
    assert problem in result.message()


def test_missing_and_extra_outputs_are_named():
    result = compare({"a": _logits()}, {"b": _logits()}, lambda _: FP32, "fmt vs torch")
    assert not result.passed
    assert "missing outputs ['a']" in result.message()
    assert "unexpected outputs ['b']" in result.message()


def test_nan_where_reference_is_finite_fails_even_with_huge_tolerance():
    ref = _logits()
    out = ref.copy()
    out[0, 0] = np.nan
    out[1, 1] = np.inf
    result = _compare(ref, out, replace(FP32, atol=1e9, rtol=1.0))
    assert not result.passed
    assert result.outputs[0].nonfinite_mismatch == 2
    assert "2 NaN/Inf not in the reference, first at (0, 0)" in result.message()


def test_matching_nonfinite_values_are_not_errors():
    ref = _logits()
    ref[0, 0] = np.inf
    assert _compare(ref, ref.copy()).passed


def test_top1_agreement_and_its_gate():
    ref = _logits(shape=(100, 10))
    out = ref.copy()
    out[:20] = out[:20, ::-1]  # 20 rows now rank classes in reverse
    tol = replace(PROFILES["int8"], atol=100.0, rtol=1.0)
    result = _compare(ref, out, tol, classifier=("y",))
    assert result.outputs[0].top1_agreement == pytest.approx(0.8, abs=0.02)
    assert not result.passed
    assert "top-1 agreement 80.0% (20 of 100 rows changed) is below the required 90%" in result.message()


@pytest.mark.parametrize("rows, changed, fails", [
    (1, 1, False),    # one row cannot show a rate above 10%
    (4, 1, False),    # P(>=1 of 4) = 0.34 for a format that changes exactly 10%
    (4, 3, True),     # P(>=3 of 4) = 0.004
    (100, 15, False),  # P(>=15 of 100) = 0.07
    (100, 17, True),   # P(>=17 of 100) = 0.02
])
def test_top1_gate_is_a_binomial_test_of_the_allowed_rate(rows, changed, fails):
    ref = _logits(shape=(rows, 10))
    out = ref.copy()
    out[:changed] = out[:changed, ::-1]
    tol = replace(PROFILES["int8"], atol=100.0, rtol=1.0)
    assert _compare(ref, out, tol, classifier=("y",)).passed is not fails


def test_reference_within_its_own_noise_is_uninformative():
    ref = _logits() * 1e-14
    reasons = uninformative_reasons({"y": ref}, lambda _: replace(FP32, noise_atol=1e-13))
    assert reasons and "would pass with the reference mean everywhere" in reasons[0]


def test_a_small_scale_is_informative_under_relative_bounds():
    assert uninformative_reasons({"y": _logits() * 1e-6}, lambda _: FP32) == []


def test_output_that_ignores_the_input_is_uninformative():
    row = _logits(shape=(1, 10))
    ref = np.repeat(row, 4, axis=0) + _logits(seed=3) * 1e-6
    reasons = uninformative_reasons({"y": ref}, lambda _: FP32, classifier_outputs=("y",))
    assert any("each input's answer given to the next input" in r for r in reasons)
    assert any("has top-1 class" in r for r in reasons)


def test_informative_reference_has_no_reasons():
    assert uninformative_reasons({"y": _logits()}, lambda _: FP32, ("y",)) == []


def test_signal_to_noise_ratio_in_decibels():
    ref = _logits(shape=(64, 10)).astype(np.float64)
    noise = np.random.default_rng(3).standard_normal(ref.shape)
    scale = np.sqrt(np.sum(ref ** 2) / np.sum(noise ** 2)) / 100  # noise power 1e-4 of the signal
    stats = _compare(ref, ref + noise * scale, tol=replace(FP32, atol=1.0, rtol=0.0)).outputs[0]
    assert stats.snr_db == pytest.approx(40.0, abs=1e-6)
    assert "SNR 40.0 dB" in _compare(ref, ref + noise * scale).message()
    exact = _compare(ref, ref.copy())
    assert exact.outputs[0].snr_db is None and "SNR exact" in exact.message()


def test_an_allowed_share_of_mismatched_elements_passes_and_one_more_fails():
    ref = _logits(shape=(100, 10))
    out = ref.copy()
    out.flat[[3, 500]] += 0.01  # 2 of 1000 elements
    assert not _compare(ref, out).passed
    two_per_mille = replace(FP32, max_mismatch=0.002, min_snr_db=40.0, max_bias=1e-3)  # the share alone
    result = _compare(ref, out, tol=two_per_mille)
    assert result.passed and result.outputs[0].out_of_tolerance == 2
    assert "up to 0.20% of elements outside" in result.message()
    out.flat[900] += 0.01
    assert not _compare(ref, out, tol=two_per_mille).passed


def test_an_allowed_share_never_excuses_nan():
    ref = _logits(shape=(100, 10))
    out = ref.copy()
    out.flat[7] = np.nan
    assert not _compare(ref, out, tol=replace(FP32, max_mismatch=0.5)).passed
