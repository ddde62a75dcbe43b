"""--executor ray on a local Ray cluster started here (`ray start --head` on 127.0.0.1 with two CPU
slots: two worker processes): the same records as a local run, and a worker killed mid-task makes a
retried task, not a lost check. Plus the resource rules (a GPU format asks for a GPU; one the
cluster has none of is not applicable, not pending forever)."""

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from modelparity.formats import build_graph
from modelparity.harness_settings import HarnessSettings
from modelparity.ray_executor import missing_resources, task_options_problem, task_resources
from modelparity.references import anchored

from .conftest import ROOT, TINY

RAY = Path(sys.executable).with_name("ray")
FORMATS = "torchscript,onnx-dynamo-ort,onnx-legacy-op17-ort"


def test_a_gpu_format_asks_for_a_gpu_and_configured_resources_add_up():
    graph = build_graph({"opsets": [17]}, [])
    assert task_resources(graph, "onnx-dynamo-ort", {}) == {"num_cpus": 1}
    assert task_resources(graph, "onnx-dynamo-ort-cuda", {}) == {"num_cpus": 1, "num_gpus": 1}
    configured = {"onnx-dynamo-ov-*": {"resources": {"intel_cpu": 1}}, "*-ov-irfp32-cpu": {"num_cpus": 2}}
    assert task_resources(graph, "onnx-dynamo-ov-irfp32-cpu", configured) == {
        "num_cpus": 2, "resources": {"intel_cpu": 1}}


def test_what_no_single_node_has_is_named():
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 4.0, "intel_cpu": 1.0}]
    assert missing_resources({"num_cpus": 1, "num_gpus": 1}, nodes) == ["GPU 1"]
    assert missing_resources({"num_cpus": 1, "resources": {"intel_cpu": 1}}, nodes) == []
    assert missing_resources({"num_cpus": 6}, nodes) == ["CPU 6"], "six CPUs in all, four at most on one"
    assert missing_resources({"num_cpus": 1}, []) == ["CPU 1"]


@pytest.mark.parametrize("values, problem", [
    ({"num_gpu": 1}, "has num_gpu; the keys are"), ({"resources": {"GPU": 1}}, "custom resources"),
    ("gpu", "must be a table")])
def test_a_bad_resource_entry_is_named(values, problem):
    assert problem in task_options_problem(values)
    assert task_options_problem({"num_gpus": 1, "resources": {"intel_cpu": 1}}) is None


def test_custom_resources_of_several_entries_add_up():
    graph = build_graph({"opsets": [17]}, [])
    configured = {"onnx-*": {"resources": {"a": 1}}, "*-ort": {"resources": {"b": 2}}}
    assert task_resources(graph, "onnx-dynamo-ort", configured) == {"num_cpus": 1,
                                                                    "resources": {"a": 1, "b": 2}}


def test_another_host_needs_a_shared_store_and_caches_it_itself(tmp_path):
    settings = HarnessSettings(opsets=(17,), plugins=(), store=tmp_path / "store", store_url=None,
                               store_options={}, rebuild_before=None, build_timeout=60, host="elsewhere",
                               inputs_dir=tmp_path / "inputs")
    with pytest.raises(ValueError, match=r"folder .*store on elsewhere, which .* cannot see.*s3://"):
        settings.store_here()
    shared = dataclasses.replace(settings, store_url=f"file://{tmp_path / 'shared'}")
    store = shared.store_here()
    assert store.remote is not None and ".cache/modelparity/store-cache" in str(store.root)
    assert anchored(Path.cwd(), "models/x.py:build") == f"{Path.cwd() / 'models/x.py'}:build"
    assert anchored(Path.cwd(), "package.module:build") == "package.module:build"


@pytest.fixture(scope="module")
def ray_cluster():
    if not RAY.exists():
        pytest.skip("ray is not installed: pip install 'modelparity[distributed]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                    "--temp-dir", temp], check=True, capture_output=True, env=env, timeout=180)
    yield f"127.0.0.1:{port}"
    _stop_cluster(temp, port)
    shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(temp: str, port: int) -> list[int]:
    """SIGKILL this cluster's processes and no other's (`ray stop` stops every Ray cluster of the
    user on the machine, a developer's own too): those whose command line names its --temp-dir (GCS,
    raylet, the monitors) or its GCS address (the Ray Client server, a child of init), and their
    descendants (the workers, which rename themselves)."""
    ours = re.compile(rb"%s|--address=[\d.]+:%d\b" % (re.escape(temp.encode()), port))
    parents: dict[int, int] = {}
    doomed: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if ours.search(command):
            doomed.add(int(entry.name))
    while children := {pid for pid, parent in parents.items() if parent in doomed} - doomed:
        doomed |= children
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(doomed)


def _kill_first_attempt(marker: Path, killed: list[int], stop: threading.Event) -> None:
    """The test's hand on the cluster: SIGKILL the worker process running the first attempt."""
    first = marker.with_name(marker.name + ".first")
    while not stop.is_set():
        if first.exists() and first.read_text().endswith("\n"):
            pid = int(first.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.1)


def _records(reports: Path) -> dict[str, dict]:
    return {c["test_id"]: c for c in json.loads((reports / "parity.json").read_text())["checks"]}


def test_a_ray_run_gives_the_local_records_and_retries_a_killed_worker(
        run_parity, ray_cluster, tmp_path, monkeypatch):
    local = run_parity("--model", f"{TINY}:build", "--formats", FORMATS)
    assert local.ret == 0, local.stdout.str()[-3000:]
    marker = tmp_path / "attempts"
    monkeypatch.setenv("MODELPARITY_TEST_DIES_ONCE", str(marker))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_attempt, args=(marker, killed, stop))
    killer.start()
    try:
        remote = run_parity("--model", f"{TINY}:build", "--formats", f"{FORMATS},torchscript-dies-once",
                            "--format-plugin", str(ROOT / "tests" / "models" / "dies_once.py"),
                            "--executor", "ray", "--ray-address", ray_cluster,
                            "--store", str(tmp_path / "store"), "--report-dir", str(tmp_path / "ray"))
    finally:
        stop.set()
        killer.join()
    assert remote.ret == 0, remote.stdout.str()[-3000:]
    mine, theirs = _records(local.reports), _records(tmp_path / "ray")
    for test_id, record in mine.items():
        other = theirs[test_id]
        assert other["executor"]["kind"] == "ray" and "executor" not in record
        for field in ("status", "worst_abs", "noise_ratio", "input_shapes", "precision_profile"):
            assert other.get(field) == record.get(field), (test_id, field)
    pids = {r["executor"]["pid"] for r in theirs.values()}
    assert len(pids) >= 2, "the cluster's worker processes shared the checks"
    attempts = [int(pid) for pid in marker.read_text().split()]
    assert killed and killed[0] in attempts and len(attempts) >= 3, attempts  # killed, retried, the other
    retried = [r for r in theirs.values() if r["format"] == "torchscript-dies-once"]
    assert [r["status"] for r in retried] == ["passed", "passed"]
    assert killed[0] not in {r["executor"]["pid"] for r in retried}, "it ran again in another process"
