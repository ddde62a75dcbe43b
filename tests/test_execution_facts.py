"""What ran is held against what a format declares: the rule on runtime facts, torch's flags, and
OpenVINO end to end (its inference precision follows the CPU unless the f32 hint is given)."""

import json

import pytest

from modelparity.execution import mismatches, precision_name, torch_facts
from modelparity.machine import machine_info
from tests.conftest import BROKEN_FORMATS, TINY


def test_fp32_format_computing_in_bf16_is_named():
    facts = {"devices": ["CPU"], "compute_precision": "bf16",
             "compute_precision_source": "OpenVINO compiled model's INFERENCE_PRECISION_HINT"}
    assert mismatches("ov-cpu", "cpu", "fp32", facts) == [
        "ov-cpu declares precision fp32, but its runtime computes in bf16 (OpenVINO compiled model's "
        "INFERENCE_PRECISION_HINT)"]
    assert mismatches("ov-cpu-bf16", "cpu", "bf16", facts) == []
    assert mismatches("fp16-ort", "cpu", "fp16", {"compute_precision": "f32"}) == []  # CPU upcasts


def test_gpu_format_with_nodes_on_the_cpu_fails_with_the_fallback_named():
    facts = {"devices": ["CPU", "CUDA"], "cpu_fallback_nodes": ["Conv /conv/Conv"]}
    problem, = mismatches("onnx-dynamo-ort-cuda", "cuda", "fp32", facts)
    assert "declares device cuda, but nodes ran on ['CPU'] (fell back to the CPU: Conv /conv/Conv)" in problem
    assert mismatches("onnx-dynamo-ort-cuda", "cuda", "fp32", {"devices": ["CUDA"]}) == []
    assert "computes in tf32" in mismatches("x-cuda", "cuda", "fp32", {"compute_precision": "tf32"})[0]


def test_a_requested_setting_the_runtime_did_not_apply_is_named():
    facts = {"devices": ["CPU"], "delegate": "none", "requested": {"delegate": "XNNPACK"}}
    assert mismatches("tflite-fp32", "cpu", "fp32", facts) == [
        "tflite-fp32 asked its runtime for delegate XNNPACK, the runtime reports none"]


def test_runtime_precision_names_are_normalised():
    assert [precision_name(v) for v in ("f32", "float32", "<Type: 'float32'>", "bf16", "FP16")] == [
        "f32", "f32", "f32", "bf16", "f16"]


def test_torch_matmul_precision_flag_is_read_and_follows_the_cpu():
    import torch

    assert torch_facts()["compute_precision"] == "f32"
    torch.set_float32_matmul_precision("medium")
    try:
        facts = torch_facts()
    finally:
        torch.set_float32_matmul_precision("highest")
    has_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert facts["compute_precision"] == ("bf16" if has_bf16 else "f32")
    assert "bf16 allowed" in facts["compute_precision_source"]
    assert facts["torch_flags"]["float32_matmul_precision"] == "medium"


def _cpu_has_bf16() -> bool:
    from modelparity.formats.openvino import BF16_FLAGS

    return any(flag in machine_info()["cpu_flags"] for flag in BF16_FLAGS)


@pytest.mark.slow
def test_openvino_inference_precision_is_checked_against_the_declaration(run_parity):
    """On a CPU with bf16, 'FP32' compiled without the f32 hint runs in bf16 and fails; on one
    without, a bf16 format compiled anyway runs in f32 and fails. Either way one of the two fails,
    with the runtime's own report named."""
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
                        "onnx-dynamo-ov-irfp32-cpu,onnx-dynamo-ov-irfp32-cpu-nohint,"
                        "onnx-dynamo-ov-irfp32-cpu-bf16-ungated")
    report = json.loads((result.reports / "parity.json").read_text())
    status = {c["test_id"]: c for c in report["checks"]}
    wrong, right = (("cpu-nohint", "cpu-bf16-ungated") if _cpu_has_bf16()
                    else ("cpu-bf16-ungated", "cpu-nohint"))
    ran = "bf16" if _cpu_has_bf16() else "f32"
    for batch in ("b1", "b4"):
        failed = status[f"tiny-onnx-dynamo-ov-irfp32-{wrong}-{batch}"]
        assert failed["status"] == "failed", failed["message"]
        assert f"but its runtime computes in {ran} (OpenVINO compiled model's INFERENCE_PRECISION_HINT)" \
            in failed["message"]
        assert failed["execution"]["mismatches"] and failed["execution"]["ran"] == f"CPU · {ran}"
        assert status[f"tiny-onnx-dynamo-ov-irfp32-{right}-{batch}"]["status"] == "passed"
        explicit = status[f"tiny-onnx-dynamo-ov-irfp32-cpu-{batch}"]
        assert explicit["status"] == "passed" and explicit["facts"]["compute_precision"] == "f32"
    result.stdout.fnmatch_lines([f"*but its runtime computes in {ran} (OpenVINO compiled model's*"])
