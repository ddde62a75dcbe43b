"""Runners in worker processes, so that a native runtime that crashes fails one check and never takes
the pytest session down.

Which runners run isolated is the harness's choice (Harness.runs_isolated): a format that sets
`isolate_runtime` always (LiteRT's builtin int8 kernels crash with SIGSEGV on resnet18's
full-integer .tflite), and every format of a runtime named in `isolate_runtimes` (ONNX Runtime by
default: it segfaulted creating a session for a user's LSTM FP16 file). One worker process per
runtime (`python -m modelparity.runner_worker`, the same environment) holds all of that runtime's
loaded runners, so isolation costs one interpreter per runtime, not one per model and format.
Inputs and outputs travel as .npz files in a scratch folder. A worker that crashes or hangs (then
it is killed) turns the request into an error naming the signal and the tail of its log, where
faulthandler has written the Python stack; the next request starts a new worker, and each runner
loads itself again there before it runs. suites/latency times such runners in process, after its
memory probe has run them in a child first.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats import FormatGraph
from modelparity.formats.base import LoadContext, NotApplicable, NotTimeable
from modelparity.worker import Worker, WorkerError

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class RuntimeWorkers:
    """One worker process per runtime family, started on first use and again after it died; a
    worker's `generation` changes at each start, so a runner knows when it must load again."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="modelparity-runners-")
        self.scratch = Path(self._scratch_dir.name)
        self._workers: dict[str, Worker] = {}
        self._generations: dict[str, int] = {}

    def generation(self, family: str) -> int:
        """The current worker's generation (starting it if none is running)."""
        if family not in self._workers:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
            self._generations[family] = self._generations.get(family, 0) + 1
            log = self.scratch / f"{family}-{self._generations[family]}.log"
            self._workers[family] = Worker(
                [sys.executable, "-u", "-X", "faulthandler", "-m", "modelparity.runner_worker", family],
                log, f"{family} runner worker", self.timeout, env)
        return self._generations[family]

    def request(self, family: str, operation: str, **arguments: Any) -> Any:
        self.generation(family)
        try:
            return self._workers[family].request(operation, **arguments)
        except WorkerError as error:
            if error.died:
                self._workers.pop(family).close()  # the next request starts a new worker
            raise RuntimeError(str(error)) from None

    def pids(self) -> dict[str, int]:
        """Runtime family -> its running worker's process id."""
        return {family: worker.pid for family, worker in self._workers.items()}

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()
        self._scratch_dir.cleanup()


class IsolatedRunner:
    """The format's runner, loaded and run in its runtime's worker process."""

    def __init__(self, workers: RuntimeWorkers, family: str, graph: FormatGraph, format_id: str,
                 context: LoadContext) -> None:
        self._workers = workers
        self._family = family
        self._load_request = {"format_id": format_id, "recipe": graph.recipe,
                              "artifact": str(context.artifact), "input_names": context.input_names,
                              "output_names": context.output_names,
                              "model": str(context.model) if context.model else None}
        self._handle = f"{format_id}:{context.artifact}"
        self._loaded_in = 0
        loaded = self._load()
        self.facts = {**loaded["facts"], "isolated": f"run in the {family} worker process"}
        self._declared = loaded["declared_shapes"]

    def _load(self) -> dict[str, Any]:
        generation = self._workers.generation(self._family)
        loaded = self._request("load", handle=self._handle, **self._load_request)
        self._loaded_in = generation
        return loaded

    def _request(self, operation: str, **arguments: Any) -> Any:
        """The worker's answer; a NotApplicable the runner raised there is raised here again."""
        result = self._workers.request(self._family, operation, **arguments)
        if "not_applicable" in result:
            raise NotApplicable(result["not_applicable"])
        return result

    def declared_shapes(self) -> dict[str, list[int | None]] | None:
        return self._declared

    def timed_call(self, inputs: Any) -> Any:
        raise NotTimeable("it runs in a worker process; suites/latency loads it in process instead")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._workers.generation(self._family) != self._loaded_in:
            self._load()  # the worker was restarted since this runner loaded
        feeds, answers = self._workers.scratch / "inputs.npz", self._workers.scratch / "outputs.npz"
        np.savez(feeds, **inputs)
        self._request("run", handle=self._handle, inputs=str(feeds), outputs=str(answers))
        with np.load(answers, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


@functools.cache
def _graph(recipe: str) -> Any:
    """The parent's format graph, rebuilt once per worker (its plugins imported once)."""
    from modelparity.formats import build_graph

    options = json.loads(recipe)
    return build_graph(options["options"], options["plugins"])


def _load(request: dict[str, Any]) -> Any:
    graph = _graph(json.dumps(request["recipe"], sort_keys=True))
    node = graph.nodes[request["format_id"]]
    assert node.load is not None
    return node.load(LoadContext(Path(request["artifact"]), node.params, request["input_names"],
                                 request["output_names"],
                                 Path(request["model"]) if request["model"] else None))


def _serve(runtime: str | None) -> None:
    """The child: import `runtime` (its family's module, when importable: the parent's first
    request then finds it imported), then answer load and run requests on the original stdout;
    everything else to stderr."""
    protocol = sys.stdout
    sys.stdout = sys.stderr
    if runtime:
        try:
            importlib.import_module(runtime)
        except Exception:  # not a module name, or broken: the first load request says how
            pass
    runners: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "load":
                runner = runners[request["handle"]] = _load(request)
                declared = runner.declared_shapes() if hasattr(runner, "declared_shapes") else None
                result: Any = {"facts": runner.facts, "declared_shapes": declared}
            elif request["op"] == "run":
                with np.load(request["inputs"]) as data:
                    inputs = {name: data[name] for name in data.files}
                outputs = runners[request["handle"]].run(inputs)
                if not isinstance(outputs, dict):
                    raise TypeError(f"the format's runner returned a {type(outputs).__name__}, not a "
                                    "dict of output name -> array: its Runner.run must return one")
                np.savez(request["outputs"], **{str(k): np.asarray(v) for k, v in outputs.items()})
                result = {}
            else:
                raise ValueError(f"unknown operation {request['op']!r}")
            answer = {"ok": True, "result": result}
        except NotApplicable as reason:  # the runtime cannot run here: the parent raises it again
            answer = {"ok": True, "result": {"not_applicable": str(reason)}}
        except Exception as error:  # the parent needs every failure as data
            answer = {"ok": False, "error": {"type": type(error).__name__, "message": str(error),
                                             "traceback": traceback.format_exc(limit=-4)}}
        protocol.write(json.dumps(answer, default=str) + "\n")
        protocol.flush()


if __name__ == "__main__":
    _serve(sys.argv[1] if len(sys.argv) > 1 else None)
