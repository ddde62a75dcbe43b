"""Merging a sharded run's reports (modelparity.report.merge): shard reports written by the real
writer (ReportFiles with a render like ParityReporter's), records made by the real comparison, no
model conversions."""

import json
import re
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from modelparity import cli
from modelparity.checks.compare import compare
from modelparity.checks.tolerance import PROFILES
from modelparity.report import SCHEMA_PATH, SCHEMA_VERSION, build_report
from modelparity.report import files as report_files
from modelparity.report.files import ReportFiles, new_run_id
from modelparity.report.html import render_html
from modelparity.report.merge import MergeError, merge
from tests.conftest import ROOT

SCHEMA = json.loads(SCHEMA_PATH.read_text())
MODELS = {"digits_cnn": "modelparity.zoo.digits:digits_cnn"}


@pytest.fixture(autouse=True)
def every_finish_rewrites(monkeypatch):
    """Partial reports written at each finished check, as a long run's are every few seconds."""
    monkeypatch.setattr(report_files, "PARTIAL_EVERY", 0.0)


def record(fmt, batch=1, status="passed"):
    """A check's record as suites/parity makes one, its comparison from modelparity's compare."""
    rng = np.random.default_rng(batch)
    reference = rng.standard_normal((batch, 10)).astype(np.float32)
    error = 1e-7 if status == "passed" else 0.5
    comparison = compare({"logits": reference}, {"logits": reference + error},
                         lambda name: PROFILES["fp32"], f"{fmt} vs torch")
    test_id = f"digits_cnn-{fmt}-b{batch}"
    return {"test_id": test_id, "nodeid": f"suites/parity/test_parity.py::test_parity[{test_id}]",
            "model": "digits_cnn", "model_reference": MODELS["digits_cnn"], "format": fmt, "batch": batch,
            "chain": [{"id": fmt, "params": {}}], "precision_profile": "fp32", "status": status,
            "message": "" if comparison.passed else comparison.message(),
            "comparison": comparison.to_dict(), "worst_abs": comparison.worst_abs, "notes": []}


def unrecorded(fmt, status="error"):
    """A check that errored before its fixture made a record (fixtures/reporting.py: unrecorded)."""
    test_id = f"digits_cnn-{fmt}-b1"
    return {"test_id": test_id, "nodeid": f"suites/parity/test_parity.py::test_parity[{test_id}]",
            "model": "digits_cnn", "format": fmt, "batch": 1, "precision_profile": "fp32",
            "unrecorded": True, "status": status, "message": "worker crashed"}


def write_shard(directory, records, shard="1/2", complete=True, duration=10.0, tools=None, name="parity",
                running=()):
    """A shard's report directory, as `pytest suites/parity --shard K/N --report-dir DIR` leaves it;
    `complete=False`: the run died after its last record, during the checks `running`."""
    def render(finished, run):
        report = build_report(sorted(finished, key=lambda r: r["test_id"]), {
            "models": MODELS, "format_patterns": ["onnx*"], "opsets": [17], "duration_seconds": duration,
            "store": "s3://bucket/store", "expected_failures_matching_nothing": [], "shard": shard,
            "phases": {"prebuild": 2.0, "compare": 0.5}})
        report["tools"].update(tools or {})
        return report, render_html(report)

    files = ReportFiles(directory, name, new_run_id(), render)
    for entry in records:
        files.started(entry["nodeid"])
        files.finished(entry["nodeid"], entry)
    for nodeid in running:
        files.started(nodeid)
    if complete:
        files.close()
    else:
        files._journal.close()  # as the process's death would
    return directory


@pytest.fixture
def two_shards(tmp_path):
    first = write_shard(tmp_path / "shard-1", [record("onnx-ort"), record("onnx-ort", 4, "failed")],
                        "1/2", duration=30.0)
    second = write_shard(tmp_path / "shard-2", [record("onnx-ov"), unrecorded("onnx-trt")], "2/2",
                         duration=20.0, tools={"onnxruntime": "0.0-other"})
    return first, second


def merged(out, name="parity"):
    document = json.loads((out / f"{name}.json").read_text())
    jsonschema.validate(document, SCHEMA)
    return document


def test_disjoint_shards_merge_into_one_report(tmp_path, two_shards):
    written = merge(two_shards, tmp_path / "merged")
    document = merged(tmp_path / "merged")
    shards = [json.loads((d / "parity.json").read_text()) for d in two_shards]
    assert [c["test_id"] for c in document["checks"]] == sorted(
        c["test_id"] for s in shards for c in s["checks"])
    assert document["summary"] == {k: sum(s["summary"][k] for s in shards) for k in document["summary"]}
    assert document["summary"]["failed"] == 1 and document["summary"]["error"] == 1
    assert written["parity"] == {**written["parity"], "checks": 4, "shards": 2, "complete": True}
    run = document["run"]
    assert run["complete"] and run["journal"] is None and run["running"] == []
    assert run["merged_from"] == [s["run"]["id"] for s in shards] and run["id"].startswith("merged-")
    session = document["session"]
    assert session["duration_seconds"] == 30.0 and session["shard_seconds_total"] == 50.0
    assert session["phases"] == {"prebuild": 4.0, "compare": 1.0} and "shard" not in session
    assert [(e["shard"], e["checks"], e["complete"]) for e in session["shards"]] == [
        ("1/2", 2, True), ("2/2", 2, True)]
    assert session["shards_differ"] == {"tools": {"onnxruntime": [shards[0]["tools"]["onnxruntime"],
                                                                   "0.0-other"]}}
    assert document["tools"] == shards[0]["tools"] and document["machine"] == shards[0]["machine"]
    page = (tmp_path / "merged" / "parity.html").read_text()
    assert "<h2>Shards</h2>" in page and "0.0-other" in page and "PARTIAL" not in page


def test_batch_report_merges_beside_parity(tmp_path, two_shards):
    write_shard(two_shards[0], [record("onnx-ort", 2)], name="batch")
    write_shard(two_shards[1], [], "2/2", name="batch")  # every shard writes each report, maybe empty
    written = merge(two_shards, tmp_path / "merged")
    assert sorted(written) == ["batch", "parity"] and written["batch"]["shards"] == 2
    assert len(merged(tmp_path / "merged", "batch")["checks"]) == 1


def test_partial_shard_refused_unless_allowed(tmp_path, two_shards, monkeypatch):
    dying = "suites/parity/test_parity.py::test_parity[digits_cnn-onnx-tflite-b4]"
    first = write_shard(tmp_path / "s1", [record("onnx-ort"), record("onnx-ort", 4, "failed")], "1/3")
    second = write_shard(tmp_path / "s2", [record("onnx-ov"), unrecorded("onnx-trt")], "2/3")
    monkeypatch.setattr(report_files, "PARTIAL_EVERY", 1e9)  # it died before rewriting its document
    dead = write_shard(tmp_path / "shard-3", [record("onnx-tflite")], "3/3", complete=False,
                       running=[dying])
    assert json.loads((dead / "parity.json").read_text())["checks"] == [], "only its journal has it"
    two_shards = [first, second]
    with pytest.raises(MergeError, match=re.escape(f"{dead / 'parity.json'} is a partial report")):
        merge([*two_shards, dead], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    merge([*two_shards, dead], tmp_path / "merged", allow_partial=True)
    document = merged(tmp_path / "merged")
    assert document["run"] == {**document["run"], "complete": False, "partial_shards": [str(dead)],
                               "running": [dying]}
    assert len(document["checks"]) == 5
    page = (tmp_path / "merged" / "parity.html").read_text()
    assert f"merged from shards that had not finished (died, or still running): {dead};" in page


def test_conflicting_duplicate_refused_naming_both_files(tmp_path, two_shards):
    other = write_shard(tmp_path / "other", [record("onnx-ort", 4, "passed")], "2/2")
    with pytest.raises(MergeError) as raised:
        merge([*two_shards, other], tmp_path / "merged")
    message = str(raised.value)
    assert "test_parity[digits_cnn-onnx-ort-b4]" in message and "failed in" in message
    assert str(two_shards[0] / "parity.json") in message and str(other / "parity.json") in message


def test_a_missing_shard_is_refused_unless_allowed(tmp_path, two_shards):
    with pytest.raises(MergeError, match=r"shards 2/2 are missing \(given: 1/2\)"):
        merge(two_shards[:1], tmp_path / "merged")
    merge(two_shards[:1], tmp_path / "merged", allow_partial=True)
    run = merged(tmp_path / "merged")["run"]
    assert run["complete"] is False and run["missing_shards"] == ["2/2"]


def test_shards_of_different_runs_are_refused(tmp_path, two_shards):
    unsharded = write_shard(tmp_path / "whole", [record("onnx-tflite")], None)
    with pytest.raises(MergeError, match="is not a shard's report"):
        merge([*two_shards, unsharded], tmp_path / "merged")
    other_total = write_shard(tmp_path / "of3", [record("onnx-tflite")], "3/3")
    with pytest.raises(MergeError, match=r"not of one run: shard totals \['2', '3'\]"):
        merge([*two_shards, other_total], tmp_path / "merged")


def test_identical_duplicate_kept_once(tmp_path, two_shards):
    again = write_shard(tmp_path / "again", [record("onnx-ov")], "2/2")
    merge([*two_shards, again], tmp_path / "merged")
    ids = [c["test_id"] for c in merged(tmp_path / "merged")["checks"]]
    assert ids.count("digits_cnn-onnx-ov-b1") == 1 and len(ids) == 4


def test_unreadable_shards_name_the_file(tmp_path, two_shards):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "parity.json").write_text('{"schema_version": 1, "checks": [')
    with pytest.raises(MergeError, match=re.escape(f"{broken / 'parity.json'} is not valid JSON")):
        merge([*two_shards, broken], tmp_path / "merged")
    (broken / "parity.json").write_text(json.dumps({**json.loads((two_shards[0] / "parity.json").read_text()),
                                                    "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(MergeError, match=re.escape(f"{broken / 'parity.json'} has schema_version")):
        merge([*two_shards, broken], tmp_path / "merged")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MergeError, match=re.escape(f"{empty} has none of parity.json, batch.json")):
        merge([*two_shards, empty], tmp_path / "merged")
    with pytest.raises(MergeError, match="given twice"):
        merge([*two_shards, two_shards[0]], tmp_path / "merged")


def test_module_command_exit_codes(tmp_path, two_shards):
    command = [sys.executable, "-m", "modelparity.report", "merge", *map(str, two_shards)]
    done = subprocess.run([*command, "--out", str(tmp_path / "merged")], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("parity: 4 checks from 2 shards (passed 2, failed 1, error 1)")
    gated = subprocess.run([*command, "--out", str(tmp_path / "gated"), "--fail-on-failures"],
                           capture_output=True, text=True, cwd=ROOT)
    assert gated.returncode == 1 and "--fail-on-failures" in gated.stderr
    refused = subprocess.run([*command, str(tmp_path / "missing"), "--out", str(tmp_path / "again")],
                             capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and f"{tmp_path / 'missing'} is not a directory" in refused.stderr


def test_modelparity_report_merge_command(tmp_path, two_shards, capsys):
    assert cli.main(["report", "merge", *map(str, two_shards), "--out", str(tmp_path / "merged")]) == 0
    assert "parity: 4 checks from 2 shards" in capsys.readouterr().out
    assert len(merged(tmp_path / "merged")["checks"]) == 4
    assert cli.main(["report", "merge", str(tmp_path / "merged"), "--out", str(tmp_path / "merged")]) == 2
    assert "is both a shard and --out" in capsys.readouterr().err


def test_example_workflow_parses():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions" / "parity-sharded.yml").read_text())
    assert workflow["jobs"]["parity"]["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert workflow["jobs"]["merge"]["needs"] == "parity"
