"""What makes a re-run cheap, shown failing when it is broken: a warm run calls neither the model's
factory nor torch eager (the spec, the reference outputs, the noise floors and the reference's
verdict come back from the store), and a change to the model's code makes them anew; artifacts are
made before the checks, parents first, with a line per conversion; a selection of ONNX Runtime formats
imports neither TensorFlow nor OpenVINO. The times themselves are benchmarks/harness_vs_bare.py's."""

import json
import sys
from types import SimpleNamespace

import pytest

from modelparity.phases import PhaseClock

pytestmark = pytest.mark.slow

COUNTED_MODEL = '''
from pathlib import Path

import torch
from torch import nn

from modelparity import AxisRange, ModelSpec

CALLS = Path(__file__).with_name("calls.txt")


def note(what):
    with CALLS.open("a") as calls:
        calls.write(what + "\\n")


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x):
        note("forward")
        return self.linear(torch.tanh(x))


def build():
    note("factory")
    torch.manual_seed(0)
    return ModelSpec(name="counted", module=Counted().eval(),
                     example_inputs={"x": torch.randn(1, 6).numpy()}, output_names=["y"],
                     dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                     axis_ranges={"batch": AxisRange(1, 8)}, factory_reusable=REUSABLE)
'''


def _counted_model(pytester, reusable=True):
    path = pytester.path / "counted_model.py"
    path.write_text(COUNTED_MODEL.replace("REUSABLE", str(reusable)))
    return path


def _calls(pytester) -> list[str]:
    path = pytester.path / "calls.txt"
    calls = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return calls


def test_a_warm_run_calls_neither_the_factory_nor_torch_eager(run_parity, pytester, tmp_path):
    model = _counted_model(pytester)
    args = ("--model", f"{model}:build", "--formats", "onnx-dynamo-ort")
    run_parity(*args, store=tmp_path / "store").assert_outcomes(passed=3)
    cold = _calls(pytester)
    assert cold.count("factory") == 1 and "forward" in cold
    warm = run_parity(*args, store=tmp_path / "store")
    warm.assert_outcomes(passed=3)
    assert _calls(pytester) == [], "the warm run recomputed what the store holds"
    report = json.loads((warm.reports / "parity.json").read_text())
    assert all(set(c["phases"]) <= {"factory", "reference", "floors", "build", "load", "run", "compare"}
               for c in report["checks"])
    assert "prebuild" in report["session"]["phases"]
    model.write_text(model.read_text().replace("torch.tanh(x)", "torch.tanh(x) * 2"))
    run_parity(*args, store=tmp_path / "store").assert_outcomes(passed=3)
    changed = _calls(pytester)
    assert changed.count("factory") == 1 and "forward" in changed, "a changed model was served stale"


def test_a_factory_that_does_not_allow_it_is_called_every_session(run_parity, pytester, tmp_path):
    model = _counted_model(pytester, reusable=False)
    args = ("--model", f"{model}:build", "--formats", "onnx-dynamo-ort")
    for _ in range(2):
        run_parity(*args, store=tmp_path / "store").assert_outcomes(passed=3)
        assert _calls(pytester).count("factory") == 1


def test_artifacts_are_made_before_the_checks_with_a_line_each(run_parity, tmp_path):
    from tests.conftest import TINY

    args = ("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,onnx-dynamo-fp16-ort")
    cold = run_parity(*args, store=tmp_path / "store")
    cold.assert_outcomes(passed=5)
    output = cold.stdout.str()
    # the export before its FP16 conversion (parents first); the ORT formats build nothing more
    assert output.index("built tiny onnx-dynamo in") < output.index("built tiny onnx-dynamo-fp16 in")
    cold.stdout.fnmatch_lines(["modelparity: [[]2/2[]] built tiny onnx-dynamo-fp16 in * s; running: *",
                               "modelparity: artifacts ready in * s: 2 built now, 0 from the store, "
                               "0 failed (* at a time)"])
    report = json.loads((cold.reports / "parity.json").read_text())
    builds = [s["key"] for c in report["checks"] for s in c["build"] if s["built_now"]]
    assert len(builds) == len(set(builds)) == 2, "each artifact counted as built once"
    warm = run_parity(*args, store=tmp_path / "store")
    assert "built tiny" not in warm.stdout.str() and "artifacts ready" not in warm.stdout.str()


IMPORT_PROBE = '''
import json
import sys


def pytest_sessionfinish(session):
    loaded = [m for m in ("tensorflow", "openvino", "onnxruntime") if m in sys.modules]
    with open("imported.json", "w") as out:
        json.dump(loaded, out)
'''


def test_a_selection_imports_only_the_runtimes_it_uses(run_parity, pytester, tmp_path):
    from tests.conftest import TINY

    (pytester.path / "import_probe.py").write_text(IMPORT_PROBE)
    pytester.syspathinsert()
    result = run_parity("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort", "-p", "import_probe",
                        "--isolate-runtimes", "none")
    result.assert_outcomes(passed=3)
    assert json.loads((pytester.path / "imported.json").read_text()) == ["onnxruntime"]


def test_phases_nest_without_counting_twice():
    clock = PhaseClock()
    with clock("floors"):
        with clock("reference"):
            sum(range(200000))
    times = clock.take()
    assert set(times) == {"floors", "reference"} and clock.take() == {}
    assert all(seconds >= 0 for seconds in times.values())


def failing_export(source, out, params, model):
    raise RuntimeError("exporter refuses")


def counted_child(source, out, params, model):
    with open(params["count"], "a") as count:
        count.write("built\n")
    return {}


def test_a_failed_parent_fails_its_children_without_building_them(tmp_path):
    """prebuild keeps the parent's failure for the checks, never attempts its children, and a
    check of the child reports the parent's error (not a second attempt)."""
    from modelparity.formats import FormatGraph
    from modelparity.formats.base import Format
    from modelparity.harness import BuildRecord, Harness, LoadedModel
    from modelparity.store import ArtifactStore, StoredBuildError

    count = tmp_path / "count"
    graph = FormatGraph([Format("parent", build=f"{__file__}:failing_export"),
                         Format("child", parent="parent", build=f"{__file__}:counted_child",
                                params={"count": str(count)}),
                         Format("other", build=f"{__file__}:counted_child", params={"count": str(count)})])
    store = ArtifactStore(tmp_path / "s")
    harness = Harness(graph, store, 60)
    model = LoadedModel("fake", SimpleNamespace(name="fake"), {"name": "fake"},
                        store.get_or_build("model", {}, lambda out: {}))
    harness._models["fake"] = model
    lines: list[str] = []
    try:
        harness.prebuild([("fake", "parent-child"), ("fake", "other")], 2, lines.append)
        with pytest.raises(StoredBuildError, match="exporter refuses"):
            harness.artifact(model, "parent-child", BuildRecord())
        record = BuildRecord()
        harness.artifact(model, "other", record)
    finally:
        harness.close()
    assert count.read_text() == "built\n", "the child of a failed parent was built, or other twice"
    assert [s["built_now"] for s in record.steps] == [True]
    assert any("failed fake parent" in line for line in lines), lines
    assert lines[-1].endswith("1 built now, 0 from the store, 1 failed (2 at a time)")


def test_two_pytest_processes_on_one_store_build_each_artifact_once(pytester, tmp_path):
    """Both prebuild the same tree at once; the store's locks make each artifact once between them."""
    import os
    import subprocess

    from tests.conftest import ROOT, TINY

    def start(name):
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", str(ROOT / "suites" / "parity"), "-p", "no:cacheprovider",
             "--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort,onnx-dynamo-fp16-ort,torchscript",
             "--store", str(tmp_path / "store"), "--report-dir", str(tmp_path / name)],
            cwd=pytester.path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    runs = [start("first"), start("second")]
    outputs = [run.communicate(timeout=900)[0].decode(errors="replace") for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    builds = [step["key"] for name in ("first", "second")
              for check in json.loads((tmp_path / name / "parity.json").read_text())["checks"]
              for step in check["build"] if step["built_now"]]
    assert len(builds) == len(set(builds)) == 3, "an artifact was built twice (or not counted)"
