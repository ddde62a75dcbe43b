"""Tolerance layering: profile -> model spec -> project config, each override with a reason."""

import pytest

from modelparity.checks.tolerance import PROFILES, ToleranceConfigError, parse_overrides, resolve


def test_profile_applies_without_overrides():
    assert resolve("fp16", "m", "onnx-dynamo-fp16-ort", "logits", []) == PROFILES["fp16"]


def test_later_layers_win_and_are_recorded():
    overrides = parse_overrides([
        {"match": "resnet*/*fp16*", "atol": 0.5, "reason": "first"},
        {"match": "resnet18/*fp16*/logits", "atol": 0.25, "reason": "more specific, later"},
        {"match": "other/*", "atol": 9.0, "reason": "does not match"},
    ], "pyproject.toml")
    tol = resolve("fp16", "resnet18", "onnx-dynamo-fp16-ort", "logits", overrides)
    assert tol.atol == 0.25
    assert tol.rtol == PROFILES["fp16"].rtol
    assert len(tol.layers) == 3 and "more specific, later" in tol.layers[-1]


def test_profile_match_by_name():
    overrides = parse_overrides([{"match": "*/profile:bf16", "rtol": 0.2, "reason": "r"}], "cfg")
    assert resolve("bf16", "m", "ov-irfp32-cpu-bf16", "y", overrides).rtol == 0.2
    assert resolve("fp32", "m", "ov-irfp32-cpu", "y", overrides).rtol == PROFILES["fp32"].rtol


@pytest.mark.parametrize("entry, message", [
    ({"match": "*", "atol": 1.0}, "needs a written 'reason'"),
    ({"atol": 1.0, "reason": "r"}, "missing 'match'"),
    ({"match": "*", "reason": "r"}, "set at least one of"),
    ({"match": "*", "atl": 1.0, "reason": "r"}, "unknown keys ['atl']"),
    ({"match": "*", "max_mismatch": 5, "reason": "r"}, "max_mismatch is a share of elements"),
])
def test_malformed_overrides_are_rejected_with_the_source(entry, message):
    with pytest.raises(ToleranceConfigError, match="pyproject.toml, tolerance entry 1") as error:
        parse_overrides([entry], "pyproject.toml")
    assert message in str(error.value)


def test_unknown_profile_is_an_error():
    with pytest.raises(ToleranceConfigError, match="unknown tolerance profile 'fp8'"):
        resolve("fp8", "m", "f", "y", [])
