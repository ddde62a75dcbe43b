"""Peak resident memory of loading a format's runner (building the session) and of running it, in
a child process per format, so that one format's allocations do not pollute the next.

Linux keeps a high-water mark of each process's resident set (VmHWM); writing 5 to
/proc/self/clear_refs resets it to the current resident set. The probe imports the runner's runtime
first (the class attribute `runtime_modules`), resets the mark, loads the runner, reads the mark, then
resets it again before running each batch. Where the mark cannot be reset the probe says so and
reports the process's peaks as they are (which then include the imports).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats import FormatGraph, build_graph
from modelparity.formats.base import LoadContext
from modelparity.isolate import run_isolated

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def probe(format_id: str, recipe: Mapping[str, Any], artifact: str, input_names: list[str],
          output_names: list[str], inputs: Mapping[str, str], runs: int, model: str) -> dict[str, Any]:
    """In the child: load the runner and run it, measuring the resident set around each step."""
    graph = build_graph(recipe["options"], recipe["plugins"])
    node = graph.nodes[format_id]
    assert node.load is not None
    runtime_modules = getattr(node.load, "runtime_modules", ())
    for module in runtime_modules:
        importlib.import_module(module)
    exact = _reset_peak()
    before = _status_kib("VmRSS")
    runner = node.load(LoadContext(Path(artifact), node.params, input_names, output_names, Path(model)))
    result: dict[str, Any] = {
        "process_mib": _mib(before), "load_peak_mib": _mib(_status_kib("VmHWM") - before),
        "runtime_imported_first": list(runtime_modules), "peak_reset": exact, "run_peak_mib": {}}
    loaded = _status_kib("VmRSS")
    result["load_retained_mib"] = _mib(loaded - before)
    for batch, path in inputs.items():
        with np.load(path) as data:
            feeds = {name: data[name] for name in input_names}
        exact = _reset_peak() and exact
        start = _status_kib("VmRSS")
        for _ in range(runs):
            runner.run(feeds)
        result["run_peak_mib"][batch] = _mib(_status_kib("VmHWM") - start)
    result["peak_reset"] = exact
    if not exact:
        result["note"] = ("/proc/self/clear_refs could not be written: peaks are the process's own, "
                          "imports included")
    return result


def measure_memory(graph: FormatGraph, format_id: str, artifact: Path, input_names: list[str],
                   output_names: list[str], inputs_by_batch: Mapping[int, Mapping[str, np.ndarray]],
                   timeout: float, model: Path, runs: int = 3) -> dict[str, Any]:
    """Run `probe` in a child process; raises IsolatedError if the child crashes, raises or hangs."""
    with tempfile.TemporaryDirectory(prefix="modelparity-memory-") as scratch:
        files = {}
        for batch, inputs in inputs_by_batch.items():
            files[str(batch)] = str(Path(scratch) / f"b{batch}.npz")
            np.savez(files[str(batch)], **inputs)
        return run_isolated("modelparity.memory:probe", {
            "format_id": format_id, "recipe": graph.recipe, "artifact": str(artifact),
            "input_names": input_names, "output_names": output_names, "inputs": files, "runs": runs,
            "model": str(model),
        }, timeout, Path(scratch) / "probe.log")
