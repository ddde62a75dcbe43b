"""The verdict end to end, through the real exporter and ONNX Runtime: at output scales 1e-3, 1 and
1e3, clean FP32/FP16/INT8 formats pass, and formats whose batched rows are offset by 5% of the
output's range, scaled by 1.1 or uncorrelated fail in parity, dynamic and batch alike, under the
fp16, bf16 and int8 profiles; a reference that is not repeatable fails its own check and no format
is blamed; an expected failure conditioned on a CPU flag is expected only where the flag is."""

import json

import pytest

from modelparity.machine import cpu_flags
from tests.conftest import BROKEN_FORMATS, ROOT, TINY
from tests.models.broken_formats import BROKEN_ROWS

pytestmark = pytest.mark.slow

SCALED = ("--model", f"{TINY}:build_milli", "--model", f"{TINY}:build", "--model", f"{TINY}:build_kilo")
MODELS = ("tiny_x0.001", "tiny", "tiny_x1000")
CLEAN = ("onnx-dynamo-ort", "onnx-dynamo-fp16-ort", "onnx-dynamo-int8dyn-ort")
BROKEN = tuple(f"onnx-dynamo-{kind}-ort-{precision}" for kind in BROKEN_ROWS
               for precision in ("fp16", "bf16", "int8"))


def _formats(*ids: str) -> tuple[str, str, str, str]:
    return ("--format-plugin", str(BROKEN_FORMATS), "--formats", ",".join(ids))


def _statuses(report_file) -> dict[str, str]:
    return {c["test_id"]: c["status"] for c in json.loads(report_file.read_text())["checks"]}


def test_parity_follows_the_output_scale(run_parity):
    result = run_parity(*SCALED, *_formats(*CLEAN, *BROKEN), "-n", "2")
    statuses = _statuses(result.reports / "parity.json")
    for model in MODELS:
        for fmt in CLEAN:
            assert statuses[f"{model}-{fmt}-b1"] == statuses[f"{model}-{fmt}-b4"] == "passed", fmt
        for fmt in BROKEN:  # row 0 is left alone: a batch of one passes, a batch of four fails
            assert (statuses[f"{model}-{fmt}-b1"], statuses[f"{model}-{fmt}-b4"]) == ("passed", "failed"), \
                f"{model} {fmt}"
    result.stdout.fnmatch_lines(["*[[]onnx-dynamo-offset-ort-int8 vs torch[]] FAILED*",
                                 "*mean error * x range (*) is above 0.02 x the output's range*"])
    result.stdout.fnmatch_lines(["*[[]onnx-dynamo-gain-ort-int8 vs torch[]] FAILED*",
                                 "*gain 1.0* (least-squares slope of output on reference) is off by more "
                                 "than 0.05*"])


def test_batch_consistency_follows_the_output_scale(run_batch):
    result = run_batch(*SCALED, *_formats(*CLEAN, *BROKEN), "-n", "2")
    statuses = _statuses(result.reports / "batch.json")
    for model in MODELS:
        assert all(statuses[f"{model}-{fmt}-batch3"] == "passed" for fmt in CLEAN), statuses
        assert all(statuses[f"{model}-{fmt}-batch3"] == "failed" for fmt in BROKEN), statuses


def test_dynamic_shapes_follow_the_output_scale(run_dynamic):
    result = run_dynamic("--model", f"{TINY}:build_milli", "--model", f"{TINY}:build_kilo",
                         *_formats(*CLEAN, "onnx-dynamo-offset-ort-int8", "onnx-dynamo-gain-ort-bf16",
                                   "onnx-dynamo-uncorrelated-ort-fp16"), "-n", "2")
    result.assert_outcomes(passed=2 + 2 * 3, failed=2 * 3)


def test_a_reference_with_dropout_left_on_fails_its_own_check_and_blames_no_format(run_parity, run_dynamic):
    result = run_parity("--model", f"{TINY}:build_dropout", "--formats", "onnx-dynamo-ort,torchscript")
    result.assert_outcomes(failed=1, skipped=4)
    result.stdout.fnmatch_lines([
        "*tiny_dropout-reference*",
        "*the reference is nondeterministic: torch eager gave different outputs for the same inputs*",
        "*dropout or batch-norm left in training mode*"])
    report = json.loads((result.reports / "parity.json").read_text())
    assert {c["display_status"] for c in report["checks"]} == {"not-judged"}
    assert report["summary"]["not-judged"] == 4 and report["summary"]["failed"] == 0
    assert all("noise_floor" not in c for c in report["checks"])  # its spread never became a floor
    dynamic = run_dynamic("--model", f"{TINY}:build_dropout", "--formats", "onnx-dynamo-ort")
    dynamic.assert_outcomes(failed=1, skipped=1)
    dynamic.stdout.fnmatch_lines(["*SKIPPED*not judged: model 'tiny_dropout': the reference is "
                                  "nondeterministic*"])


def test_a_structure_the_harness_cannot_name_fails_before_any_converter_runs(run_parity):
    result = run_parity("--model", f"{TINY}:build_list_of_dicts", "--formats", "onnx-dynamo-ort")
    result.assert_outcomes(failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*output 'logits' is a dict, not a tensor*"])
    report = json.loads((result.reports / "parity.json").read_text())
    assert all(not c.get("build") for c in report["checks"]), "a converter ran"


@pytest.mark.parametrize("present", [True, False])
def test_an_expected_failure_conditioned_on_a_cpu_flag_applies_only_where_it_holds(pytester, shared_store,
                                                                                 present):
    flag = sorted(cpu_flags())[0]  # a flag this CPU has, whatever the CPU
    condition = flag if present else f"!{flag}"
    pytester.makefile(".toml", pyproject=(ROOT / "pyproject.toml").read_text() + f'''
[[tool.modelparity.expected_failure]]
match = "tiny-onnx-dynamo-perturbed-ort-*"
reason = "self-test: expected only where the CPU has {flag}"
when = ["{condition}"]
''')
    result = pytester.runpytest_subprocess(
        str(ROOT / "suites" / "parity" / "test_parity.py"), "--rootdir", str(pytester.path),
        "--confcutdir", str(ROOT), "--store", str(shared_store), "-p", "no:cacheprovider",
        "--model", f"{TINY}:build", *_formats("onnx-dynamo-perturbed-ort"), timeout=900)
    if present:
        result.assert_outcomes(passed=1, xfailed=2)
    else:
        result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([f"*expected failures conditioned on this machine: *tiny-onnx-dynamo-"
                                 f"perturbed-ort-* when {condition}: "
                                 f"{'applies' if present else 'not here'}*"])
