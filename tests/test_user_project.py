"""modelparity in a user's own repository: the `modelparity` command runs the packaged suites with
pytest's rootdir at the project, so its [tool.modelparity] (model, formats, expected failure, store,
reports) applies and its relative paths resolve against it. CI runs the same from the built wheel in a
fresh virtualenv (.ci/run); here the plugin comes from this environment's install of the package."""

import json
import shutil
import subprocess
import sys

import pytest

from modelparity.cli import main, suite_command, suites_root
from modelparity.formats import build_graph
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "user_project"


def test_modelparity_parity_in_the_example_project_uses_its_own_settings(tmp_path):
    project = tmp_path / "user_project"
    shutil.copytree(EXAMPLE, project)
    result = subprocess.run([sys.executable, "-m", "modelparity.cli", "parity", "-p", "no:randomly"],
                            cwd=project, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((project / "reports" / "parity.json").read_text())
    assert {c["model"] for c in report["checks"]} == {"classifier"}
    assert {c["format"] for c in report["checks"]} == {"torchscript", "onnx-dynamo-ort",
                                                        "onnx-dynamo-fp16-ort"}
    statuses = {c["test_id"]: c["status"] for c in report["checks"]}
    assert statuses["classifier-onnx-dynamo-fp16-ort-b1"] == "xfailed"
    assert statuses["classifier-onnx-dynamo-ort-b4"] == "passed"
    assert (project / ".store").is_dir() and not (ROOT / "examples" / "user_project" / ".store").exists()
    checker = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_example_report.py"),
                              str(project)], capture_output=True, text=True)
    assert checker.returncode == 0, checker.stdout


def test_a_suite_command_reads_the_projects_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.modelparity]\n")
    command = suite_command("latency", ["-k", "x"], tmp_path)
    assert command[:5] == [str(suites_root() / "latency"), "--rootdir", str(tmp_path), "-c",
                           str(tmp_path / "pyproject.toml")]
    assert "--benchmark-only" in command and command[-2:] == ["-k", "x"]
    assert suite_command("parity", [], tmp_path / "none")[3] == "-p"  # no pyproject: no -c


def test_formats_lists_each_format_with_its_chain_and_whether_it_runs_here(capsys):
    assert main(["formats", "--formats", "onnx-dynamo-ort,onnx-dynamo-ort-cuda", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_id = {row["format"]: row for row in rows}
    assert by_id["onnx-dynamo-ort"]["chain"] == "onnx-dynamo -> onnx-dynamo-ort"
    assert by_id["onnx-dynamo-ort"]["runs_here"]
    cuda = by_id["onnx-dynamo-ort-cuda"]
    assert cuda["runs_here"] == (not cuda["missing"] and not cuda["not_applicable"])


def test_doctor_and_help_answer(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "cpu " in out and "onnxruntime" in out and str(suites_root()) in out
    assert main(["--help"]) == 0 and "formats" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_formats_can_be_excluded():
    graph = build_graph({"opsets": [17]})
    kept = {f.id for f in graph.runnable(["onnx-dynamo-*", "!*fp16*", "!*int8*"])}
    assert "onnx-dynamo-ort" in kept and not any("fp16" in f or "int8" in f for f in kept)
    assert {f.id for f in graph.runnable(["!onnx-*"])} == {f.id for f in graph.runnable()
                                                           if not f.id.startswith("onnx-")}
