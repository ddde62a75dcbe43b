"""The latency suite's engine: warm-up, rounds, percentiles, what is timed, the memory probe and the
HTML report. Nothing here asserts a latency: timings are the benchmarks' business."""

import itertools
import json

import numpy as np
import pytest

from modelparity.formats import build_graph
from modelparity.formats.base import Format
from modelparity.latency import (
    DRIFT,
    drift,
    execution_facts,
    percentiles,
    plan_rounds,
    timed_callable,
    warm_up,
)
from modelparity.memory import measure_memory
from modelparity.report.latency import render
from tests.conftest import BROKEN_FORMATS


def fake_clock(durations):
    """A clock under which the n-th call takes durations[n] seconds."""
    now, steps = [0.0], iter(durations)

    def clock():
        return now[0]

    def call():
        now[0] += next(steps)
    return clock, call


SLOW_START = [0.65] * 20 + [0.024] * 100  # torch's first calls on one CPU, then warm


def test_warm_up_runs_until_the_calls_stop_getting_faster():
    clock, call = fake_clock([0.3, 0.1, 0.05] + [0.024] * 100)
    warm = warm_up(call, min_seconds=0, clock=clock)
    assert warm.settled and warm.calls == 8 and warm.settled_seconds == pytest.approx(0.024)


def test_a_slow_plateau_needs_min_seconds_and_drift_shows_when_it_was_too_short():
    clock, call = fake_clock(SLOW_START)
    early = warm_up(call, min_seconds=0.2, clock=clock)
    assert early.settled_seconds == pytest.approx(0.65)  # fooled by the plateau...
    timed = SLOW_START[early.calls:early.calls + 30]
    assert drift(timed) > DRIFT  # ...and the timed rounds say so
    clock, call = fake_clock(SLOW_START)
    patient = warm_up(call, min_seconds=15, clock=clock)
    assert patient.settled and patient.settled_seconds == pytest.approx(0.024)
    assert drift(SLOW_START[patient.calls:patient.calls + 30]) == pytest.approx(1.0)


def test_warm_up_stops_at_its_cap_and_says_it_did_not_settle():
    clock, call = fake_clock([1.0 / n for n in range(1, 1000)])  # always getting faster
    warm = warm_up(call, max_calls=40, clock=clock)
    assert (warm.calls, warm.settled) == (40, False)


@pytest.mark.parametrize(("per_call", "budget", "rounds"), [
    (0.1, 1.0, 10), (1.0, 1.0, 5), (2e-6, 1.0, 2000), (0.25, 0.0, 5)])
def test_rounds_fill_the_budget_within_bounds(per_call, budget, rounds):
    assert plan_rounds(per_call, budget) == rounds


def test_percentiles_of_round_times():
    spread = percentiles([i / 1000 for i in range(1, 101)])
    assert spread["p50"] == pytest.approx(0.0505) and spread["p90"] == pytest.approx(0.0901)
    assert spread["p99"] == pytest.approx(0.09901)


class BareRunner:
    facts = {"runtime": "bare"}

    def run(self, inputs):
        return {"y": inputs["x"] * 2}


class SplitRunner(BareRunner):
    facts = {"provider": "CPUExecutionProvider", "threads": 2, "inference_precision": "bf16"}

    def timed_call(self, inputs):
        return lambda: inputs["x"] * 2


def test_a_runner_without_timed_call_is_timed_through_run_and_the_report_says_so():
    call, covers = timed_callable(BareRunner(), {"x": np.ones(3)})
    assert call()["y"].tolist() == [2, 2, 2] and covers.startswith("run()")
    call, covers = timed_callable(SplitRunner(), {"x": np.ones(3)})
    assert call().tolist() == [2, 2, 2] and covers == "the runtime's inference call only"


def test_execution_facts_prefer_what_the_runtime_reported():
    node = Format("x", precision="fp32")
    assert execution_facts(node, SplitRunner()) | {"runtime": None} == {
        "provider": "CPUExecutionProvider", "precision": "bf16", "precision_source": "runtime",
        "threads": 2, "runtime": None}
    assert execution_facts(node, BareRunner())["precision"] == "fp32"
    assert execution_facts(node, BareRunner())["precision_source"] == "artifact"


def test_memory_probe_sees_what_a_runner_holds_after_loading_and_allocates_per_run(tmp_path):
    """MemoryHogRunner keeps 300 MiB after loading and allocates 200 MiB more per run."""
    import torch

    from modelparity.formats.onnx_export import PRIMARY_ONNX
    from modelparity.harness import BuildRecord, Harness
    from modelparity.store import ArtifactStore
    from tests.conftest import TINY

    graph = build_graph({"opsets": [17]}, [str(BROKEN_FORMATS)])
    harness = Harness(graph, ArtifactStore(tmp_path / "store"), build_timeout=300)
    model = harness.model(f"{TINY}:build")
    artifact = harness.artifact(model, PRIMARY_ONNX, BuildRecord())
    harness.close()
    inputs = {1: model.spec.inputs_for({"batch": 1}, seed=0)}
    names = (model.spec.input_names, model.spec.output_names)
    hog = measure_memory(graph, "onnx-dynamo-hog", artifact.path, *names, inputs, timeout=120,
                         model=model.artifact.path)
    clean = measure_memory(graph, "onnx-dynamo-ort", artifact.path, *names, inputs, timeout=120,
                           model=model.artifact.path)
    assert hog["peak_reset"] and clean["peak_reset"]
    assert 290 <= hog["load_peak_mib"] and 290 <= hog["load_retained_mib"] <= 400, hog
    assert 190 <= hog["run_peak_mib"]["1"] <= 260, hog
    assert clean["load_peak_mib"] < 100 and clean["run_peak_mib"]["1"] < 50, clean
    assert hog["runtime_imported_first"] == ["onnxruntime"]
    del torch


def benchmark_entry(fmt, batch, median, memory=None):
    return {"name": f"test_latency[tiny-{fmt}-b{batch}]", "group": f"tiny b{batch}",
            "stats": {"median": median, "max": median * 3, "rounds": 10},
            "extra_info": {"model": "tiny", "format": fmt, "batch": batch, "p90": median * 1.5,
                           "p99": median * 2, "provider": "CPU", "precision": "fp32",
                           "precision_source": "artifact", "threads": 2, "memory": memory or {},
                           "items_per_second": batch / median}}


def test_latency_html_has_bars_whiskers_throughput_and_memory():
    benchmarks = [benchmark_entry(f, b, m * b) for (f, m), b in itertools.product(
        [("onnx-dynamo-ort", 0.001), ("torchscript", 0.004)], [1, 8])]
    benchmarks[0]["extra_info"]["memory"] = {"load_peak_mib": 12.5, "run_peak_mib": 3.0}
    html = render({"benchmarks": benchmarks, "machine_info": {"modelparity": {
        "cpu_model": "Some CPU", "cpu_count": 2, "cpu_flags": ["avx2"], "gpu": {"gpus": []}}}})
    assert html.count("<svg") == 3  # a bar chart per batch, one throughput plot
    assert "Some CPU" in html and "12.5" in html and "throughput" in html
    assert html.index("onnx-dynamo-ort") < html.index("torchscript")  # fastest first
    assert not any(tag in html for tag in ("<script", "<link", "src=")), "not self-contained"


def test_latency_html_renders_again_from_a_saved_run(tmp_path):
    from modelparity.report.latency import main

    saved = tmp_path / "0001_base.json"
    saved.write_text(json.dumps({"benchmarks": [benchmark_entry("onnx-dynamo-ort", 1, 0.001)]}))
    assert main([str(saved), str(tmp_path / "out.html")]) == 0
    assert "onnx-dynamo-ort" in (tmp_path / "out.html").read_text()
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "out.html")]) == 2
