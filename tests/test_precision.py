"""suites/precision: the drift measures and gates, and the suite end to end failing on an INT8 file
with a wrong weight scale."""

import json

import numpy as np
import pytest

from modelparity.checks.precision import (
    GATES,
    DriftConfigError,
    gate_for,
    judge,
    measure_drift,
    parse_gate_overrides,
    run_in_chunks,
)
from tests.conftest import BROKEN_FORMATS, TINY


def logits(predictions, classes=4):
    values = np.zeros((len(predictions), classes), np.float32)
    values[np.arange(len(predictions)), predictions] = 1.0
    return values


def test_drift_counts_changed_predictions_accuracy_and_where_they_moved():
    reference = logits([0, 1, 2, 3, 0, 1, 2, 3])
    candidate = logits([0, 1, 2, 3, 0, 1, 3, 0])
    drift = measure_drift(reference, candidate, labels=np.array([0, 1, 2, 3, 0, 1, 2, 0]))
    assert (drift.changed, drift.agreement) == (2, 0.75)
    assert sorted(drift.confusion) == [(2, 3, 1), (3, 0, 1)]
    assert drift.accuracy_reference == 7 / 8 and drift.accuracy == 7 / 8
    assert drift.accuracy_delta_points == 0.0
    problems = judge(drift, GATES["int8"], "logits")
    assert problems == [
        "output 'logits': top-1 agreement with FP32 75.00% (2/8 predictions changed) < 90.00%"]


def test_nan_or_inf_where_fp32_is_finite_fails_whatever_the_gate():
    candidate = logits([0, 1, 2, 3])
    candidate[1, 2] = np.inf
    drift = measure_drift(logits([0, 1, 2, 3]), candidate, None)
    assert drift.nonfinite == 1
    assert any("NaN/Inf where FP32 is finite (FP16 overflow?)" in p for p in judge(drift, GATES["fp16"], "y"))


def test_gate_overrides_need_a_reason_and_apply_by_model_and_format():
    with pytest.raises(DriftConfigError, match="pyproject.toml: drift_gate entry 0 needs"):
        parse_gate_overrides([{"match": "m/*", "min_agreement": 0.5}], "pyproject.toml")
    overrides = parse_gate_overrides([{"match": "resnet18/*int8*", "min_agreement": 0.6,
                                       "reason": "measured"}], "pyproject.toml")
    assert gate_for("int8", "resnet18", "onnx-dynamo-int8dyn-ort", overrides).min_agreement == 0.6
    assert gate_for("int8", "digits_cnn", "onnx-dynamo-int8dyn-ort", overrides).min_agreement == 0.9


def test_a_format_that_refuses_the_chunk_runs_one_sample_at_a_time():
    from tests.models.tiny_model import build

    spec = build()
    inputs = spec.inputs_for({"batch": 20}, seed=0)

    def fixed_batch_one(feed):
        if len(feed["image"]) != 1:
            raise ValueError("fixed shape")
        return {"logits": feed["image"].reshape(1, -1)[:, :5]}
    outputs, chunk = run_in_chunks(fixed_batch_one, spec, inputs)
    assert chunk == 1 and outputs["logits"].shape == (20, 5)


@pytest.mark.slow
def test_precision_suite_catches_a_wrong_int8_weight_scale(run_precision):
    result = run_precision("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
                           "onnx-dynamo-fp16-ort,onnx-dynamo-int8dyn-ort,onnx-dynamo-int8dyn-badscale-ort")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*top-1 agreement with FP32*predictions changed) < 90.00%*",
                                 "*gate (default)*"])
    report = json.loads((result.reports / "precision.json").read_text())
    fp16 = next(c for c in report["checks"] if c["format"] == "onnx-dynamo-fp16-ort")
    assert fp16["outputs"]["logits"]["samples"] == 256 and fp16["status"] == "passed"
    html = (result.reports / "precision.html").read_text()
    assert "<table>" in html and "<svg" in html, "the drift table and the accuracy plot"
    assert "first diverging node: <b>" in html, "the failing INT8 file is traced"


@pytest.mark.slow
def test_an_intermediate_that_overflows_fp16_fails_with_the_tensor_named(run_precision):
    """ONNX Runtime's CPU provider computes the FP16 file's square in FP32, so the output stays finite
    here; the file still stores that square as FP16, and the check names it."""
    result = run_precision("--model", f"{TINY}:build_fp16_overflow", "--formats", "onnx-dynamo-fp16-ort")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FP16 overflow: tensors Inf/NaN where FP32 is finite, first pow*",
                                 "*first diverging node: node_pow* (Pow)*"])
    check = json.loads((result.reports / "precision.json").read_text())["checks"][0]
    assert check["outputs"]["logits"]["nonfinite"] == 0, "ONNX Runtime CPU computed it in FP32"
    assert check["divergence"]["overflows"][0]["name"].startswith("pow")
    assert "FP16 overflow" in (result.reports / "precision.html").read_text()
