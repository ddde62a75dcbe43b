"""suites/latency end to end in a child pytest: the JSON and HTML it writes, and that its gate
(pytest-benchmark's --benchmark-compare-fail) fails on a deployment that got slower."""

import json

import pytest

from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow


def test_latency_suite_writes_pytest_benchmark_json_with_what_ran_and_an_html_report(run_latency):
    result = run_latency("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,torchscript",
                         "--latency-batches", "1,4")
    result.assert_outcomes(passed=4)
    data = json.loads((result.reports / "latency.json").read_text())
    assert data["run"]["complete"] and data["run"]["id"]
    assert {b["group"] for b in data["benchmarks"]} == {"tiny b1", "tiny b4"}
    ort = next(b for b in data["benchmarks"] if b["name"].endswith("[tiny-onnx-dynamo-ort-b4]"))
    extra = ort["extra_info"]
    assert (extra["format"], extra["batch"], extra["provider"], extra["precision"]) == (
        "onnx-dynamo-ort", 4, "CPUExecutionProvider", "fp32")
    assert extra["timed"] == "the runtime's inference call only"
    assert extra["p50"] <= extra["p90"] <= extra["p99"] and extra["items_per_second"] > 0
    assert ort["stats"]["rounds"] >= 5 and extra["warmup_calls"] >= 7
    assert extra["memory"]["peak_reset"] and extra["memory"]["load_peak_mib"] >= 0
    assert "run_peak_mib" in extra["memory"]
    assert "cpu_flags" in data["machine_info"]["modelparity"]
    html = (result.reports / "latency.html").read_text()
    assert html.count("<svg") == 3 and "onnx-dynamo-ort" in html


def test_benchmark_compare_fail_gates_a_deployment_that_got_slower(run_latency, tmp_path, monkeypatch):
    """The slowed format sleeps MODELPARITY_TEST_DELAY before each call: 20 ms saved as the
    baseline, the same again passes a 50% gate, 40 ms (+100%) fails it. (At 15% the unchanged
    re-run failed once in a fresh-clone CI at c9719ac: its median was 23.9 ms against 20.4 ms, +17%,
    a sleep's overshoot on a busy 2-core machine; the gate is what is tested, not its width.)"""
    storage = f"file://{tmp_path / 'benchmarks'}"
    args = ("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
            "onnx-dynamo-slowed", "--latency-batches", "1", "--latency-memory", "off",
            "--benchmark-storage", storage)
    gate = ("--benchmark-compare", "--benchmark-compare-fail=median:50%")
    monkeypatch.setenv("MODELPARITY_TEST_DELAY", "0.02")
    run_latency(*args, "--benchmark-save", "baseline").assert_outcomes(passed=1)
    same = run_latency(*args, *gate)
    assert same.ret == 0, same.stdout.str()
    monkeypatch.setenv("MODELPARITY_TEST_DELAY", "0.04")
    slower = run_latency(*args, *gate)
    assert slower.ret != 0
    said = slower.stdout.str() + slower.stderr.str()
    assert "Performance has regressed" in said
    assert "test_latency[tiny-onnx-dynamo-slowed-b1] (0001_baselin) - Field 'median' has failed" in said


def test_a_format_that_refuses_a_batch_errors_and_an_untimeable_one_is_skipped(run_latency):
    """onnx-dynamo-fixed-ort has its input shapes frozen at the export's batch of 2."""
    result = run_latency("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
                         "onnx-dynamo-fixed-ort,onnx-dynamo-untimeable,onnx-dynamo-ort-cuda",
                         "--latency-batches", "2,4", "--latency-memory", "off", "-rs")
    result.assert_outcomes(passed=1, errors=1, skipped=4)
    for line in ("SKIPPED*cannot be timed in this process: its runtime lives in another process*",
                 "SKIPPED*not applicable: this onnxruntime*offers*not CUDAExecutionProvider*all-gpu*",
                 "*ERROR at setup of test_latency[[]tiny-onnx-dynamo-fixed-ort-b4[]]*",
                 "onnx-dynamo-fixed-ort failed to run at batch 4: InvalidArgument*"):
        result.stdout.fnmatch_lines([line])
    assert "never used" not in result.stdout.str() and "During handling" not in result.stdout.str()
    deselected = run_latency("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort-cuda",
                             "-m", "not gpu")
    deselected.assert_outcomes(deselected=3)  # b1 and b8 by `-m`, and the load test (no HTTP format)


def test_load_test_reports_throughput_and_fails_on_a_service_that_refuses_concurrent_requests(run_latency):
    result = run_latency("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                         "--formats", "onnx-dynamo-ort-http,onnx-dynamo-ort-http-busy", "-k", "load",
                         "--load-clients", "3", "--load-seconds", "1.5")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*onnx-dynamo-ort-http-busy under load: 3 clients for *s: * requests, "
                                 "* failed; statuses {*'503': *}*"])
    report = json.loads((result.reports / "latency.json").read_text())
    load = next(b["extra_info"]["load"] for b in report["benchmarks"]
                if b["extra_info"]["format"] == "onnx-dynamo-ort-http")
    assert load["clients"] == 3 and load["failed"] == 0 and load["requests"] > 3
    assert 0 < load["p50_ms"] <= load["p99_ms"] and load["throughput_rps"] > 0
    assert "HTTP services under load" in (result.reports / "latency.html").read_text()
