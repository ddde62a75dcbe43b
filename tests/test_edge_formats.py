"""The paths lowered from torch.export (ExecuTorch XNNPACK and portable, AOTInductor in Python and
C++): they match torch on the tiny model, record what XNNPACK delegated, fail on a program whose
weight was perturbed before lowering, and fail suites/dynamic when the export froze the batch axis
(an AOTInductor package compiled for batch 2 answers a batch of 1 with two rows, without an error)."""

import json
import sys

import pytest

from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow

LOWERED = ("executorch-xnnpack", "executorch-portable", "aoti", "aoti-cpp")


def test_lowered_formats_match_torch_and_fail_on_a_perturbed_program(run_parity):
    formats = [f"torch-export-{f}" for f in LOWERED] + [f"torch-export-perturbed-{f}" for f in LOWERED]
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", ",".join(formats))
    # the reference's own check, then batches 1 and 4 of each format
    result.assert_outcomes(passed=1 + 2 * len(LOWERED), failed=2 * len(LOWERED))
    for name in LOWERED:
        result.stdout.fnmatch_lines([f"*[[]torch-export-perturbed-{name} vs torch[]] FAILED*"])
    report = json.loads((result.reports / "parity.json").read_text())
    checks = {c["test_id"]: c for c in report["checks"]}
    xnnpack = checks["tiny-torch-export-executorch-xnnpack-b4"]["facts"]
    assert xnnpack["delegate"] == "XNNPACK" and xnnpack["delegation"]["delegated_nodes"] > 0
    portable = checks["tiny-torch-export-executorch-portable-b4"]["facts"]
    assert portable["delegate"] == "none" and portable["provider"] == "portable kernels"
    assert checks["tiny-torch-export-aoti-cpp-b4"]["facts"]["runtime"].endswith("(C++ program)")


def test_a_frozen_batch_axis_fails_the_dynamic_suite_in_every_lowered_format(run_dynamic):
    formats = ["torch-export", "torch-export-static"] + [f"torch-export-{f}" for f in LOWERED] \
        + [f"torch-export-static-{f}" for f in LOWERED]
    result = run_dynamic("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                         "--formats", ",".join(formats))
    # 1: the reference's check; the program itself (its declared shapes) and each lowered format
    result.assert_outcomes(passed=2 + len(LOWERED), failed=1 + len(LOWERED))
    for name in LOWERED:
        result.stdout.fnmatch_lines([f"*test_dynamic_axes[[]tiny-torch-export-static-{name}-dynamic[]]*"])
    result.stdout.fnmatch_lines(["tiny-torch-export-dynamic * passed * batch: dynamic",
                                 "tiny-torch-export-static-dynamic * failed * batch: broken"])


def test_core_ml_off_macos_is_not_applicable_unless_the_file_froze_a_declared_axis(run_dynamic):
    """Core ML cannot predict off macOS; suites/dynamic still judges what its file declares."""
    if sys.platform == "darwin":
        pytest.skip("on macOS Core ML predicts, and suites/dynamic judges its outputs")
    result = run_dynamic("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "-rs",
                         "--formats", "torch-export-coreml-fp32,torch-export-static-coreml-fp32")
    result.assert_outcomes(passed=1, skipped=1, failed=1)  # passed: the reference's check
    result.stdout.fnmatch_lines(["*not applicable: Core ML predicts only on macOS*"
                                 "(declared dynamic in the file: batch)*"])
    result.stdout.fnmatch_lines(["*torch-export-static-coreml-fp32 failed to load: ValueError: "
                                 "*model.mlpackage: input 'image': dim 0 (axis 'batch', declared 1..*) "
                                 "is frozen in the file*"])
