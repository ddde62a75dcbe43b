"""The parity suite, run end to end in a child pytest on a tiny model and deliberately broken formats."""

import json

import jsonschema
import pytest

from modelparity.report import SCHEMA_PATH
from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow


def test_clean_model_passes_and_reports_validate(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,torchscript")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*modelparity parity matrix*", "onnx-dynamo-ort*ok*"])
    report = json.loads((result.reports / "parity.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert {c["test_id"] for c in report["checks"]} == {
        "tiny-onnx-dynamo-ort-b1", "tiny-onnx-dynamo-ort-b4", "tiny-torchscript-b1", "tiny-torchscript-b4"}
    check = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-ort-b4")
    assert check["status"] == "passed" and check["facts"]["providers"] == ["CPUExecutionProvider"]
    assert check["build"][0]["info"]["opset"] >= 18
    html = (result.reports / "parity.html").read_text()
    assert "<svg" in html and "tiny-onnx-dynamo-ort-b4" in html
    assert "conversion logs: <a href='file://" in html
    assert not any(tag in html for tag in ("<script", "<link", "src=", "@import")), "not self-contained"


def test_warm_store_rebuilds_nothing(run_parity):
    run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort")
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort")
    report = json.loads((result.reports / "parity.json").read_text())
    assert all(not step["built_now"] for c in report["checks"] for step in c["build"])


def test_two_xdist_workers_build_each_artifact_once(run_parity, tmp_path):
    ort = ",".join(f"onnx-dynamo-ort{suffix}" for suffix in (
        "", "-disabled", "-basic", "-extended", "-seq1", "-par2", "-devalloc", "-cuda", "-trt", "opt-ort"))
    result = run_parity("--model", f"{TINY}:build", "--formats", f"{ort},onnx-dynamo-fp16-ort",
                        "-n", "2", store=tmp_path / "fresh-store")
    outcomes = result.parseoutcomes()
    # 8 CPU formats x 2 batches; onnx-dynamo-ort-cuda and -trt are not applicable without a GPU
    assert (outcomes["passed"], outcomes["skipped"]) == (19, 4), result.stdout.str()  # + the reference
    report = json.loads((result.reports / "parity.json").read_text())
    builds = [step["key"] for c in report["checks"] for step in c.get("build", []) if step["built_now"]]
    assert sorted(builds) == sorted(set(builds)), "an artifact was built twice"
    assert len(set(builds)) == 3  # the export, its FP16 conversion, its ORT-optimised copy


def test_perturbed_weight_in_the_onnx_artifact_fails_with_statistics(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-ort,onnx-dynamo-perturbed-ort")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*output 'logits' [[]onnx-dynamo-perturbed-ort vs torch[]] FAILED: */5 (*%) out of tolerance*"
        "max abs * at (0, *would pass elementwise with atol>=*",
        "first diverging node: * (Conv), output *",
        "FAILED*tiny-onnx-dynamo-perturbed-ort-b1*",
    ])
    report = json.loads((result.reports / "parity.json").read_text())
    failed = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-perturbed-ort-b4")
    assert failed["divergence"]["op_type"] == "Conv" and failed["divergence"]["inputs"] == []  # graph input


def test_int8_formats_pass_and_a_wrong_weight_scale_fails(run_parity):
    """quantize_dynamic and static QDQ of the tiny model pass the int8 profile; the same dynamic file
    with one weight scale multiplied by 4 does not."""
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
                        "onnx-dynamo-int8dyn-ort,onnx-dynamo-int8qdq-ort,onnx-dynamo-int8dyn-badscale-ort")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(["*[[]onnx-dynamo-int8dyn-badscale-ort vs torch[]] FAILED*top-1 agreement*"])
    report = json.loads((result.reports / "parity.json").read_text())
    qdq = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-int8qdq-ort-b1")
    assert "QuantizeLinear" in qdq["build"][-1]["info"]["quantized_ops"]


def test_a_runtime_that_crashes_its_process_fails_only_its_own_tests(run_parity):
    """isolate_runtime: the runner lives in a worker process; SIGSEGV there is one failed check."""
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-ort,onnx-dynamo-crashing-runtime")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*onnx-dynamo-crashing-runtime failed to run*onnxruntime runner "
                                 "worker crashed with SIGSEGV during 'run'*"])


def test_crashing_converter_fails_only_its_own_tests(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-ort,onnx-dynamo-segfaulting-ort")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*conversion failed for onnx-dynamo-segfaulting-ort*crashed with SIGSEGV*"])


def test_hanging_converter_times_out(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-hanging-ort", "--build-timeout", "5")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*did not finish within 5 s and was killed*"])


def test_missing_backend_is_skipped_with_install_command_or_fails_when_strict(run_parity):
    args = ("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
            "onnx-dynamo-absent", "-rs")
    result = run_parity(*args)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*modelparity_absent_backend is not installed: "
                                 "pip install modelparity-absent-backend*"])
    strict = run_parity(*args, "--strict-backends")
    strict.assert_outcomes(passed=1, failed=2)


@pytest.mark.parametrize("function, message", [
    ("build_wrong_type", "*returned dict, expected modelparity.ModelSpec*"),
    ("build_bad_axis", "*dynamic_axes names 'imgae'*"),
    ("does_not_exist", "*has no callable 'does_not_exist'*"),
])
def test_bad_user_model_is_a_clear_usage_error(run_parity, function, message):
    result = run_parity("--model", f"{TINY}:{function}", "--formats", "onnx-dynamo-ort")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_model_producing_nan_is_named(run_parity):
    result = run_parity("--model", f"{TINY}:build_nan", "--formats", "onnx-dynamo-ort")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*produces NaN/Inf in output 'logits' in torch eager itself*"])


def test_uninformative_user_model_warns_loudly(run_parity):
    result = run_parity("--model", f"{TINY}:build_uninformative", "--formats", "onnx-dynamo-ort")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 3 and outcomes["warnings"] >= 2
    result.stdout.fnmatch_lines(["*UninformativeReferenceWarning: vacuous check: reference uninformative: "
                                 "*output 'logits' has top-1 class 0*", "onnx-dynamo-ort*vacuous*"])
    report = json.loads((result.reports / "parity.json").read_text())
    assert report["summary"]["vacuous"] == 2
    strict = run_parity("--model", f"{TINY}:build_uninformative", "--formats", "onnx-dynamo-ort",
                        "--strict-informative")
    strict.assert_outcomes(passed=1, failed=2)
    strict.stdout.fnmatch_lines(["*vacuous: reference uninformative*", "*(--strict-informative)*"])


def test_user_model_runs_through_every_format(run_parity):
    result = run_parity("--model", f"{TINY}:build", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    report = json.loads((result.reports / "parity.json").read_text())
    formats = {c["format"] for c in report["checks"]}
    assert {"torchscript", "onnx-dynamo-ort", "onnx-dynamo-fp16-ort", "onnx-dynamo-ortopt-ort",
            "ov-irfp32-cpu", "onnx-dynamo-ov-irfp16-cpu", "onnx-legacy-op13-ort"} <= formats
    skipped = [c for c in report["checks"] if c["status"] == "skipped"]
    assert all(c["skip_kind"] == "not-applicable" for c in skipped), [
        (c["test_id"], c["skip_kind"], c["message"]) for c in skipped if c["skip_kind"] != "not-applicable"]
