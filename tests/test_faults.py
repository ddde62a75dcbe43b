"""Fault injection, end to end: for each way a run can go wrong, the session survives, the report is
complete and current, the message names the cause, and nothing stale remains.

The store's faults (a corrupt manifest, a stale child, a stored ImportError, lock waits, orphaned
converters, temp folders of dead runs) are in tests/test_store.py and tests/test_isolate.py; the
HTTP service's (requests it cannot serve) in tests/test_serve_limits.py.
"""

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from modelparity.report import SCHEMA_PATH
from tests.conftest import ROOT, TINY

FAULTY = ROOT / "tests" / "models" / "faulty_formats.py"
BAD_MODELS = ROOT / "tests" / "models" / "bad_models.py"
RAISING_PLUGIN = ROOT / "tests" / "models" / "raising_plugin.py"


def report_of(result):
    """parity.json, valid against its schema, and the run id its journal starts with."""
    report = json.loads((result.reports / "parity.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    journal = [json.loads(line) for line in (result.reports / "parity.jsonl").read_text().splitlines()]
    assert journal[0] == {**journal[0], "event": "run-started", "run": report["run"]["id"]}
    return report, journal


def by_id(report):
    return {c["test_id"]: c for c in report["checks"]}


def test_nan_and_inf_outputs_fail_their_checks_and_every_record_reaches_the_report(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(FAULTY), "--formats",
                        "onnx-dynamo-ort,onnx-dynamo-nan,onnx-dynamo-inf")
    result.assert_outcomes(passed=3, failed=4)
    report, journal = report_of(result)
    assert report["run"]["complete"] and journal[-1]["event"] == "run-finished"
    checks = by_id(report)
    assert checks["tiny-onnx-dynamo-ort-b1"]["status"] == "passed"
    for kind in ("nan", "inf"):
        check = checks[f"tiny-onnx-dynamo-{kind}-b1"]
        assert check["status"] == "failed" and check["worst_abs"] == "Infinity"
        assert "5 NaN/Inf where the reference is finite" in check["message"]
        output = check["comparison"]["outputs"][0]
        assert output["out_at_max_abs"] is None and output["top1_agreement"] == 0.0
    json.loads((result.reports / "parity.json").read_text(),  # strict JSON: no bare NaN/Infinity
               parse_constant=lambda name: pytest.fail(f"parity.json has a bare {name}"))


def test_a_runtime_crashing_at_session_creation_fails_only_its_checks(run_parity):
    """ONNX Runtime runs in a worker process by default: the segfault is that check's failure, with
    the signal and the Python stack where it happened, and the next check starts a new worker."""
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(FAULTY), "--formats",
                        "onnx-dynamo-segfault-at-load,onnx-dynamo-ort")
    result.assert_outcomes(passed=3, failed=2)
    report, _ = report_of(result)
    crashed = by_id(report)["tiny-onnx-dynamo-segfault-at-load-b1"]
    assert "crashed with SIGSEGV during 'load'" in crashed["message"]
    assert "faulty_formats.py\", line" in crashed["message"]  # faulthandler's stack
    isolated = by_id(report)["tiny-onnx-dynamo-ort-b4"]["facts"]["isolated"]
    assert isolated == "run in the onnxruntime worker process"


def test_in_process_by_choice_a_crash_under_xdist_is_still_a_record(run_parity):
    """With --isolate-runtimes none the crash kills an xdist worker: xdist reports it, and the check
    is in parity.json as an error though it never made a record."""
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(FAULTY), "--formats",
                        "onnx-dynamo-segfault-at-load", "--isolate-runtimes", "none", "-n", "1",
                        "-k", "b1")
    report, _ = report_of(result)
    crashed = by_id(report)["tiny-onnx-dynamo-segfault-at-load-b1"]
    assert crashed["unrecorded"] and crashed["status"] == "error"
    assert crashed["format"] == "onnx-dynamo-segfault-at-load" and crashed["model"] == "tiny"
    assert "crashed while running" in crashed["message"]
    assert report["summary"]["error"] == 1


@pytest.mark.parametrize("fault, message", [
    ("list", "*returned a list, not a dict of output name -> array*"),
    ("renaming", "*missing outputs ?'logits'? (got ?'renamed_logits'?)*"),  # ?: fnmatch's [
])
def test_a_runner_answering_the_wrong_structure_fails_with_what_came_back(run_parity, fault, message):
    for isolation in ("onnxruntime", "none"):
        result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(FAULTY), "--formats",
                            f"onnx-dynamo-{fault}", "--isolate-runtimes", isolation)
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines([message])
        report, _ = report_of(result)
        assert report["summary"]["failed"] == 2


def test_a_previous_runs_report_is_replaced_when_the_run_starts_and_a_killed_run_says_it_is_partial(
        pytester, tmp_path):
    """kill -9 while a check runs: parity.json is this run's (its id), says it is not complete, and
    the journal has the finished check's record and names the check that was running."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "parity.json").write_text(json.dumps({"run": {"id": "an-old-run", "complete": True},
                                                     "summary": {"passed": 99}}))
    env = {**os.environ, "MODELPARITY_TEST_HANG_SECONDS": "600"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "parity"), "-p", "no:cacheprovider",
         "-p", "no:randomly", "--model", f"{TINY}:build", "--format-plugin", str(FAULTY),
         "--formats", "onnx-dynamo-ort,onnx-dynamo-hanging-run", "--isolate-runtimes", "none",
         "--store", str(tmp_path / "store"), "--report-dir", str(reports), "-k", "b1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal_path = reports / "parity.jsonl"
    hanging = "test_parity[tiny-onnx-dynamo-hanging-run-b1]"
    deadline = time.time() + 300
    while time.time() < deadline:
        text = journal_path.read_text() if journal_path.exists() else ""
        if f'"check-started", "nodeid": "suites/parity/test_parity.py::{hanging}"' in text:
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the hanging check never started")
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    report = json.loads((reports / "parity.json").read_text())
    assert report["run"]["id"] != "an-old-run" and report["run"]["complete"] is False
    events = [json.loads(line) for line in journal_path.read_text().splitlines()]
    assert events[0]["run"] == report["run"]["id"]
    finished = {e["nodeid"].split("::")[-1]: e["record"] for e in events if e["event"] == "check-finished"}
    assert finished["test_parity[tiny-onnx-dynamo-ort-b1]"]["status"] == "passed"
    assert events[-1] == {**events[-1], "event": "check-started"} and events[-1]["nodeid"].endswith(hanging)
    assert "PARTIAL report" in (reports / "parity.html").read_text()


@pytest.mark.parametrize("function", ["build_wrong_output_count", "build_nan_for_large_batches"])
def test_a_model_that_breaks_its_own_spec_leaves_a_complete_report(run_parity, function):
    """Setup-time failures (the reference cannot be named or is NaN for some inputs) are records in
    parity.json with the message, never missing, never an error count of 0."""
    result = run_parity("--model", f"{BAD_MODELS}:{function}", "--formats", "onnx-dynamo-ort")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report, _ = report_of(result)
    assert {c["test_id"] for c in report["checks"]} == {"bad-onnx-dynamo-ort-b1", "bad-onnx-dynamo-ort-b4"}
    assert report["run"]["complete"]
    assert all(c["message"] for c in report["checks"] if c["status"] != "passed")
    assert sum(report["summary"][s] for s in ("failed", "error", "skipped")) >= 1


@pytest.mark.parametrize("args, first_line", [
    (("--format-plugin", str(RAISING_PLUGIN)),
     f"ERROR: formats: {RAISING_PLUGIN}: formats(graph, options) raised RuntimeError: this plugin is "
     "broken"),
    (("--model", f"{TINY}:build_raises"),
     "ERROR: *the factory raised RuntimeError: weights file missing*"),
    (("--model", "no/such/file.py:build"), "ERROR: *no such file: *no/such/file.py*"),
])
def test_usage_errors_print_first_and_alone(run_parity, args, first_line):
    result = run_parity("--model", f"{TINY}:build", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert lines and fnmatch.fnmatchcase(lines[0], first_line), result.stderr.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert len(result.stderr.lines) < 15, result.stderr.str()


def test_a_truncated_store_entry_is_rebuilt_not_an_error(run_parity, tmp_path):
    """Every artifact.json of a warm store cut in half (a disk full, a kill mid-write): each entry
    that no longer parses is not an entry, and is built again; the run passes as the first did."""
    store = tmp_path / "store"
    args = ("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort")
    run_parity(*args, store=store).assert_outcomes(passed=3)
    manifests = list(store.rglob("artifact.json"))
    assert manifests
    for manifest in manifests:
        manifest.write_text(manifest.read_text()[: len(manifest.read_text()) // 2])
    result = run_parity(*args, store=store)
    result.assert_outcomes(passed=3)
    report, _ = report_of(result)
    assert report["summary"]["passed"] == 2 and report["run"]["complete"]
    assert any(step["built_now"] for check in report["checks"] for step in check["build"])
