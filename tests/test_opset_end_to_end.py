"""suites/opset end to end on the tiny model: a baseline saved at one opset checks a run at another; an
output changed in the baseline fails and is named; a missing, corrupt or outdated baseline is a usage
error naming the file, never a pass."""

import json
import shutil

import jsonschema
import numpy as np
import pytest

from modelparity.baseline import SCHEMA_PATH, file_digest
from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow
FORMATS = ("--model", f"{TINY}:build", "--formats", "onnx-legacy-op*-ort,onnx-dynamo-ort")


def test_a_baseline_saved_at_opset_13_checks_a_run_at_opset_17(run_opset):
    saved = run_opset(*FORMATS, "--opsets", "13", "--save-baseline", "upgrade")
    saved.assert_outcomes(passed=3)  # op13, op14 (onnx-tf's opset, always exported) and dynamo
    manifest = json.loads((run_opset.baselines / "upgrade" / "baseline.json").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))
    assert {e["format"]: e["opset"] for e in manifest["entries"]}["onnx-legacy-op13-ort"] == 13
    assert manifest["provenance"]["tools"]["onnxruntime"]

    result = run_opset(*FORMATS, "--opsets", "17", "--compare-baseline", "upgrade")
    result.assert_outcomes(passed=3)
    report = json.loads((result.reports / "opset.json").read_text())
    op17 = next(c for c in report["checks"] if c["format"] == "onnx-legacy-op17-ort")
    against = {(c["against"], c["format"]): c for c in op17["comparisons"]}
    assert against[("baseline", "onnx-legacy-op13-ort")]["opset"] == 13
    assert against[("opset", "onnx-legacy-op14-ort")]["passed"]
    assert op17["opset"] == 17 and report["baseline"]["name"] == "upgrade"
    assert "onnx-legacy-op17-ort" in (result.reports / "opset.html").read_text()


def test_an_output_changed_in_the_baseline_fails_and_is_named(run_opset):
    run_opset(*FORMATS, "--opsets", "13", "--save-baseline", "golden").assert_outcomes(passed=3)
    folder = run_opset.baselines / "golden"
    manifest = json.loads((folder / "baseline.json").read_text())
    entry = next(e for e in manifest["entries"] if e["format"] == "onnx-dynamo-ort")
    logits = np.load(folder / entry["file"])["logits"]
    logits[0, 2] += 0.5
    np.savez(folder / entry["file"], logits=logits)
    entry["sha256"] = file_digest(folder / entry["file"])  # as if another run had saved it
    (folder / "baseline.json").write_text(json.dumps(manifest))

    result = run_opset(*FORMATS, "--opsets", "13", "--compare-baseline", "golden")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*output 'logits' [[]onnx-dynamo-ort (opset *) vs baseline golden onnx-dynamo-ort*] FAILED: 1/5*",
        "FAILED*tiny-onnx-dynamo-ort-opset*"])


DAMAGES = {
    "missing": "baseline 'golden': */golden/baseline.json does not exist; save one with*",
    "truncated": "*golden/tiny/onnx-dynamo-ort.npz does not match the sha256 */golden/baseline.json*",
    "not-json": "*golden/baseline.json is not valid JSON*",
    "no-entries": "*golden/baseline.json does not match the baseline schema at (top level): 'entries' is*",
    "version": "*golden/baseline.json is baseline format version 99; this modelparity reads version 1*",
}


def _damage(folder, damage):
    manifest_path = folder / "baseline.json"
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "truncated":
        data = (folder / "tiny" / "onnx-dynamo-ort.npz").read_bytes()
        (folder / "tiny" / "onnx-dynamo-ort.npz").write_bytes(data[: len(data) // 2])
    elif damage == "not-json":
        manifest_path.write_text(manifest_path.read_text()[:100])
    else:
        manifest = json.loads(manifest_path.read_text())
        if damage == "version":
            manifest["version"] = 99
        else:
            del manifest["entries"]
        manifest_path.write_text(json.dumps(manifest))


def test_a_missing_or_corrupt_baseline_is_an_error_naming_the_file(run_opset):
    """One saved baseline, damaged five ways in turn (each a copy)."""
    run_opset(*FORMATS, "--opsets", "13", "--save-baseline", "pristine").assert_outcomes(passed=3)
    for damage, message in DAMAGES.items():
        folder = run_opset.baselines / "golden"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run_opset.baselines / "pristine", folder)
        _damage(folder, damage)
        result = run_opset(*FORMATS, "--compare-baseline", "golden")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, damage
        result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_a_format_missing_from_the_baseline_fails(run_opset):
    run_opset("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort", "--save-baseline", "narrow")
    result = run_opset("--model", f"{TINY}:build", "--formats", "onnx-dynamo-fp16-ort",
                       "--compare-baseline", "narrow")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*has no entry for tiny / onnx-dynamo-fp16-ort at any opset; save a "
                                 "baseline that includes it*"])


def test_a_format_not_applicable_where_the_baseline_was_saved_is_skipped_with_that_reason(
        run_opset, monkeypatch):
    gated = ("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
             "onnx-dynamo-ort,onnx-dynamo-ort-gated")
    monkeypatch.delenv("MODELPARITY_TEST_GATED", raising=False)
    run_opset(*gated, "--save-baseline", "elsewhere").assert_outcomes(passed=1, skipped=1)
    monkeypatch.setenv("MODELPARITY_TEST_GATED", "1")
    result = run_opset(*gated, "--compare-baseline", "elsewhere", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*not in baseline 'elsewhere': where it was saved, not applicable: "
                                 "MODELPARITY_TEST_GATED unset*"])
