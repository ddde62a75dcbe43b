"""The TensorFlow-side formats end to end: layout handling, the onnx-tf worker and its environment."""

import os

import numpy as np
import pytest

from modelparity import legacy_env
from modelparity.formats.layout import Layout, describe_layout, match_permutation
from tests.conftest import BROKEN_FORMATS, TINY


def test_channels_last_is_found_and_undone():
    assert match_permutation([None, 3, 12, 20], [None, 12, 20, 3]) == ((0, 2, 3, 1), False)
    assert match_permutation([None, 10], [None, 10]) == ((0, 1), False)
    # all dims symbolic: the converter's habit decides (onnx2tf channels-last, onnx-tf as is)
    ncl = [None, 4, None]
    assert match_permutation(ncl, ncl) == ((0, 2, 1), True)
    assert match_permutation(ncl, ncl, prefer_channels_last=False) == ((0, 1, 2), True)
    nchw, nhwc = [None, 3, 12, 20], [None, 12, 20, 3]
    layout = Layout(describe_layout({"inputs": {"x": nchw}, "outputs": {"y": nchw}},
                                    {"inputs": ["x"], "outputs": ["out_0"]},
                                    {"inputs": {"x": nhwc}, "outputs": {"out_0": nhwc}}))
    x = np.arange(2 * 3 * 12 * 20, dtype=np.float32).reshape(2, 3, 12, 20)
    fed = layout.to_artifact({"x": x})["x"]
    assert fed.shape == (2, 12, 20, 3)
    assert np.array_equal(layout.from_artifact({"out_0": fed})["y"], x)


def test_unmatchable_shapes_are_an_error():
    with pytest.raises(ValueError, match="no layout maps"):
        match_permutation([None, 3, 12, 20], [None, 7, 7, 3])


@pytest.fixture
def onnx_tf_environment():
    """The onnx-tf environment, which CI always creates (tox sets MODELPARITY_ONNX_TF_ENV)."""
    reason = legacy_env.absent_reason()
    if reason is not None:
        message = f"{reason}: install it with `{legacy_env.CREATE_COMMAND}`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


pytestmark = pytest.mark.slow


def test_nhwc_nchw_mixup_on_a_non_square_input_fails(run_parity):
    result = run_parity("--model", f"{TINY}:build_non_square", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-onnx2tf-tf,onnx-dynamo-onnx2tf-reshaped")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines([
        "*output 'logits' [[]onnx-dynamo-onnx2tf-reshaped vs torch[]] FAILED*",
        "FAILED*tiny_wide-onnx-dynamo-onnx2tf-reshaped-b1*",
    ])


def test_onnx_tf_worker_crash_fails_only_its_own_tests(run_parity, onnx_tf_environment):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-legacy-op14-onnxtf-tf,onnx-legacy-op14-onnxtf-crashing-tf")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*conversion failed for onnx-legacy-op14-onnxtf-crashing-tf*"
                                 "the onnx-tf worker crashed with SIGSEGV*"])


def test_missing_onnx_tf_environment_is_skipped_with_the_command(run_parity, monkeypatch, tmp_path):
    monkeypatch.setenv(legacy_env.ENV_VARIABLE, str(tmp_path / "no-such-env"))
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-legacy-op14-onnxtf-tf", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([f"*the onnx-tf environment is not at {tmp_path}*install it with "
                                 "`python -m modelparity.legacy_env`*"])
