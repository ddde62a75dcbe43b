"""The GPU side on a machine without one: GPU formats listed and skipped with the reason, failing
under --require-gpu, selected by --providers; ONNX Runtime's two packages never both installed."""

import json

import pytest

from modelparity import gpu
from modelparity.formats import build_graph
from modelparity.formats.onnxruntime import engine_cache
from tests.conftest import TINY

GPU_FORMATS = "eager-cuda*,onnx-dynamo-ort-cuda,onnx-dynamo-ort-trt*,onnx-dynamo-fp16-ort-cuda"


def _no_gpu() -> bool:
    return not gpu.gpu_facts().get("torch_cuda_available") and \
        "CUDAExecutionProvider" not in gpu.gpu_facts()["onnxruntime_providers"]


pytestmark = pytest.mark.skipif(not _no_gpu(), reason="these tests describe a machine without a GPU")


def test_every_format_says_what_it_runs_on():
    graph = build_graph({"opsets": [17]})
    kinds = {f.id: graph.provider(f.id) for f in graph.runnable()}
    assert kinds["onnx-dynamo-ort"] == kinds["ov-irfp32-cpu"] == kinds["torchscript"] == "cpu"
    assert kinds["onnx-dynamo-ort-cuda"] == kinds["onnx-dynamo-fp16-ort-cuda"] == "cuda"
    assert kinds["eager-cuda"] == kinds["eager-cuda-tf32"] == kinds["eager-cuda-fp16"] == "cuda"
    assert kinds["onnx-dynamo-ort-trt"] == kinds["onnx-dynamo-ort-trt-fp16"] == "tensorrt"
    graph.providers = frozenset({"tensorrt"})
    assert [f.id for f in graph.runnable()] == ["onnx-dynamo-ort-trt", "onnx-dynamo-ort-trt-fp16"]


def test_cpu_and_gpu_onnxruntime_together_is_refused(monkeypatch):
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
    monkeypatch.setattr(gpu, "distribution_version", versions.get)
    problem = gpu.onnxruntime_conflict()
    assert "both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are installed" in problem
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in problem
    monkeypatch.setattr(gpu, "distribution_version", {"onnxruntime": "1.32.0"}.get)
    assert gpu.onnxruntime_conflict() is None


def test_tensorrt_engines_live_in_the_store_beside_the_artifact(tmp_path):
    artifact = tmp_path / "store" / "ab" / "abcdef"
    artifact.mkdir(parents=True)
    assert engine_cache(artifact) == tmp_path / "store" / "tensorrt-engines" / "abcdef"
    assert not any(artifact.iterdir())


@pytest.mark.slow
def test_gpu_formats_are_listed_and_skipped_with_the_reason(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--formats", GPU_FORMATS)
    result.assert_outcomes(passed=1, skipped=14)
    result.stdout.fnmatch_lines(["modelparity: gpu none (no NVIDIA GPU visible to nvidia-smi)*",
                                 "modelparity: 7 formats resolved: eager-cuda, eager-cuda-tf32, *"])
    report = json.loads((result.reports / "parity.json").read_text())
    reasons = {c["format"]: c["message"] for c in report["checks"]}
    assert all(c["skip_kind"] == "not-applicable" for c in report["checks"])
    assert "torch.cuda.is_available() is False here" in reasons["eager-cuda-fp16"]
    assert "not TensorrtExecutionProvider" in reasons["onnx-dynamo-ort-trt"]
    assert "pip install -c constraints.txt -e '.[all-gpu]'" in reasons["onnx-dynamo-ort-cuda"]


@pytest.mark.slow
def test_require_gpu_turns_each_skip_into_a_failure(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--formats", f"onnx-dynamo-ort,{GPU_FORMATS}",
                        "--require-gpu")
    result.assert_outcomes(passed=3, failed=14)
    result.stdout.fnmatch_lines(["*--require-gpu: onnx-dynamo-ort-cuda cannot run on this machine: not "
                                 "applicable: this onnxruntime * offers *, not CUDAExecutionProvider*"])


@pytest.mark.slow
def test_require_gpu_with_no_gpu_format_selected_is_a_usage_error(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort", "--require-gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--require-gpu, but the selection (--formats onnx-dynamo-ort, "
                                 "--providers any) has no GPU format"])
    result = run_parity("--model", f"{TINY}:build", "--providers", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--providers: unknown *'tpu'*; the formats run on: cpu, cuda, tensorrt"])
