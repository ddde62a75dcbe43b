"""suites/dynamic end to end in a child pytest: frozen axes and frozen branches fail, with the
minimal shape; a format that declares fixed shapes is reported as static, not passed."""

import json

import pytest

from modelparity.spec import AxisRange, SpecError
from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow


def test_clean_model_keeps_its_batch_axis_everywhere_it_claims(run_dynamic):
    result = run_dynamic("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,onnx-legacy-op17-ort")
    result.assert_outcomes(passed=3)
    report = json.loads((result.reports / "dynamic.json").read_text())
    assert {c["axes"]["batch"]["status"] for c in report["checks"]} == {"dynamic"}
    assert all(c["examples"] >= 2 for c in report["checks"])
    assert "<table>" in (result.reports / "dynamic.html").read_text()


def test_equal_and_stepped_axes_export_and_run(run_dynamic):
    result = run_dynamic("--model", f"{TINY}:build_square_sizes", "--formats",
                         "onnx-dynamo-ort,ov-irfp32-cpu,onnx-legacy-op17-ort")
    result.assert_outcomes(passed=4)
    report = json.loads((result.reports / "dynamic.json").read_text())
    assert {c["axes"]["side"]["status"] for c in report["checks"]} == {"dynamic"}


def test_onnx_with_a_fixed_batch_claimed_dynamic_fails_with_the_shape(run_dynamic):
    result = run_dynamic("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                         "--formats", "onnx-dynamo-fixed-ort")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*declared dynamic axes are fixed in the artifact: batch: input 'image' dim 0 is fixed at 2*",
        "*minimal failing example: model 'tiny', format 'onnx-dynamo-fixed-ort', axis sizes {'batch': 1}*",
    ])
    check = json.loads((result.reports / "dynamic.json").read_text())["checks"][0]
    assert check["axes"]["batch"]["status"] == "broken"
    assert check["minimal_failure"]["input_shapes"] == {"image": [1, 3, 16, 16]}


def test_frozen_branch_fails_under_the_legacy_exporter(run_dynamic):
    # --runxfail: the project's pyproject lists pad_to_even as an expected failure; here we want
    # to see the failure itself.
    result = run_dynamic("--models", "pad_to_even", "--formats", "onnx-legacy-op17-ort", "--runxfail")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*minimal failing example: model 'pad_to_even', format 'onnx-legacy-op17-ort', "
        "axis sizes {'batch': *, 'length': 5}*",
        "*shape (*, 8, 2), but the reference has (*, 8, 3)*",
    ])
    check = json.loads((result.reports / "dynamic.json").read_text())["checks"][0]
    assert check["axes"]["length"]["status"] == "broken"
    assert check["axes"]["batch"]["status"] == "dynamic"


def test_format_declaring_fixed_shapes_is_static_when_it_refuses_others(run_dynamic):
    result = run_dynamic("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                         "--formats", "onnx-dynamo-fixed-ort-declared-static")
    result.assert_outcomes(passed=2)
    check = json.loads((result.reports / "dynamic.json").read_text())["checks"][0]
    assert check["axes"]["batch"]["status"] == "static"
    assert check["message"].startswith("static: input shapes fixed")


def test_axis_range_steps():
    assert list(AxisRange(30, 100, multiple_of=32).sizes()) == [32, 64, 96]
    assert AxisRange(1, 8).allows(3) and not AxisRange(32, 96, multiple_of=32).allows(48)
    with pytest.raises(SpecError, match="no multiple of 64"):
        AxisRange(1, 40, multiple_of=64)
