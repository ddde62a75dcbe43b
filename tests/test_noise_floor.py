"""The noise floor: measured from torch's own float32 error, raising a tolerance that asks for less,
reported as a ratio, written by --calibrate and read back."""

import json
from dataclasses import replace

import numpy as np
import pytest

from modelparity.checks import noise_floor
from modelparity.checks.noise_floor import NoiseFloor
from modelparity.checks.tolerance import PROFILES
from tests.conftest import BROKEN_FORMATS, TINY
from tests.models import tiny_model


def _reference(spec, inputs):
    import torch

    with torch.no_grad():
        return {"logits": spec.module(torch.from_numpy(inputs["image"])).numpy()}


def test_floor_is_float32_against_float64_of_the_same_inputs():
    spec = tiny_model.build()
    inputs = spec.inputs_for({"batch": 4}, seed=1)
    floors = noise_floor.measure(spec.module, inputs, _reference(spec, inputs), spec.output_names)
    floor = floors["logits"]
    assert 0 < floor.float64_abs < 1e-4 and floor.note == ""
    assert floor.value == max(floor.float64_abs, floor.threads_abs or 0.0)


def test_a_model_that_cannot_run_in_float64_keeps_the_thread_part_and_says_why():
    spec = tiny_model.build_float32_inside()
    inputs = spec.inputs_for({"batch": 2}, seed=1)
    floor = noise_floor.measure(spec.module, inputs, _reference(spec, inputs), spec.output_names)["logits"]
    assert floor.float64_abs is None and "float64 run failed (RuntimeError" in floor.note


def test_a_tolerance_below_the_floor_is_raised_and_says_so():
    floor = NoiseFloor("y", float64_abs=2e-6, threads_abs=5e-7)
    tight = replace(PROFILES["fp32"], atol=1e-12, rtol=0.0, layers=("profile fp32", "spec: tight"))
    raised = noise_floor.apply(tight, floor)
    assert raised.absolute(scale=0.0) == pytest.approx(noise_floor.NOISE_FACTOR * 2e-6)
    assert noise_floor.below_floor(raised) and "below 10 x the reference's own noise" in raised.layers[-1]
    profile = noise_floor.apply(PROFILES["fp32"], floor)  # no atol of its own: nothing was raised
    assert profile.noise_atol == pytest.approx(2e-5) and not noise_floor.below_floor(profile)
    assert noise_floor.ratio_text(6e-6, floor) == "3x noise (floor 2e-06)"
    assert noise_floor.ratio_text(4e-3, floor) == "2,000x noise (floor 2e-06)"
    assert noise_floor.ratio(1.0, NoiseFloor("y", 0.0, 0.0)) is None


@pytest.mark.slow
def test_tolerance_below_the_floor_is_reported_not_failed_and_a_wrong_weight_still_fails(run_parity):
    result = run_parity("--model", f"{TINY}:build_tight_tolerance", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-ort,onnx-dynamo-perturbed-ort")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*onnx-dynamo-perturbed-ort vs torch* FAILED*x noise (floor *",
                                 "*ToleranceBelowNoiseFloorWarning: onnx-dynamo-ort output 'logits': noise "
                                 "floor: atol 1e-12 is below 10 x the reference's own noise*"])
    report = json.loads((result.reports / "parity.json").read_text())
    clean = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-ort-b4")
    assert clean["below_noise_floor"] and clean["noise_ratio"] < noise_floor.NOISE_FACTOR
    broken = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-perturbed-ort-b4")
    assert broken["noise_ratio"] > 1000
    assert "noise" in (result.reports / "parity.html").read_text()


@pytest.mark.slow
def test_calibrate_writes_the_floors_and_the_next_run_reads_them(run_parity, tmp_path):
    floors = tmp_path / "floors.json"
    run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort", "--calibrate",
               "--noise-floors", str(floors)).assert_outcomes(passed=3)
    written = json.loads(floors.read_text())["models"]["tiny"]
    assert set(written["batches"]) == {"1", "4"} and written["batches"]["4"]["logits"]["float64_abs"] > 0
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort",
                        "--noise-floors", str(floors))
    result.stdout.fnmatch_lines([f"modelparity: noise floors read from {floors}"])
    report = json.loads((result.reports / "parity.json").read_text())
    check = next(c for c in report["checks"] if c["test_id"] == "tiny-onnx-dynamo-ort-b4")
    assert check["noise_floor"]["logits"]["source"] == "calibrated (floors.json)"
    assert check["noise_floor"]["logits"]["float64_abs"] == written["batches"]["4"]["logits"]["float64_abs"]


@pytest.mark.slow
def test_a_failure_prints_a_command_that_reproduces_it_on_the_saved_inputs(run_parity):
    import shlex
    import subprocess

    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS),
                        "--formats", "onnx-dynamo-perturbed-ort", "--parity-batch", "2")
    result.assert_outcomes(passed=1, failed=2)
    line = next(line for line in result.stdout.lines if "reproduce on the saved inputs: " in line)
    command = line.split("reproduce on the saved inputs: ", 1)[1]
    saved = shlex.split(command)[shlex.split(command).index("--inputs") + 1]
    assert np.load(saved)["image"].shape[0] in (1, 2)
    repro = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=600)
    assert repro.returncode == 1, repro.stdout + repro.stderr
    assert "[onnx-dynamo-perturbed-ort vs torch] FAILED" in repro.stdout
    assert "x noise" in repro.stdout and "outputs saved to" in repro.stdout
