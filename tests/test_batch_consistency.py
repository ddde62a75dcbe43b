"""Batch consistency end to end: a sample's answer must not depend on the rest of its batch."""

import json

import jsonschema
import pytest

from modelparity.report import SCHEMA_PATH
from tests.conftest import TINY

pytestmark = pytest.mark.slow


def test_clean_formats_are_consistent_and_recorded(run_batch):
    result = run_batch("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,torchscript",
)
    result.assert_outcomes(passed=3)
    report = json.loads((result.reports / "batch.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    check = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-ort-batch3")
    assert check["kind"] == "batch-consistency" and len(check["batch_rows"]) == 5  # 3 alone, 2 repeated
    assert all(row["passed"] for row in check["batch_rows"])


def test_rows_that_leak_into_each_other_in_the_export_fail(run_batch):
    result = run_batch("--model", f"{TINY}:build_batch_leak",
                        "--formats", "onnx-dynamo-ort,onnx-legacy-op17-ort,torchscript",
)
    # torch.jit.trace runs forward outside ONNX export: TorchScript keeps the per-sample branch
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "batch inconsistency: a sample's answer depends on the rest of its batch",
        "output 'logits' [[]onnx-dynamo-ort: row 0 of a batch of 3 vs that sample alone[]] FAILED*",
    ])
