"""Runners whose runtime has crashed processes run in a worker process, so a crash fails one check
and never takes the pytest session down.

A format sets `isolate_runtime` when its runtime is native code known to crash on some artifacts
(LiteRT's builtin int8 kernels crash with SIGSEGV on resnet18's full-integer .tflite). For those,
suites/parity and suites/dynamic get an IsolatedRunner: the real runner is loaded in a child
(`python -m modelparity.runner_worker`, the same environment), inputs and outputs travel as .npz
files, and a crash becomes an error naming the signal and the tail of the child's log; the next run
starts a new child. suites/latency times such runners in process, after its memory probe has run
them in a child first.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats import FormatGraph
from modelparity.formats.base import LoadContext, NotTimeable
from modelparity.worker import Worker, WorkerError

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class _Processes:
    """The worker and scratch folder of one IsolatedRunner, held apart from it so that the runner's
    finalizer can stop them without keeping the runner alive."""

    def __init__(self) -> None:
        self.scratch_dir = tempfile.TemporaryDirectory(prefix="modelparity-runner-")
        self.scratch = Path(self.scratch_dir.name)
        self.worker: Worker | None = None

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def close(self) -> None:
        self.stop_worker()
        self.scratch_dir.cleanup()


class IsolatedRunner:
    """The format's runner, loaded and run in a worker process."""

    def __init__(self, graph: FormatGraph, format_id: str, context: LoadContext, timeout: float) -> None:
        self._load_request = {"format_id": format_id, "recipe": graph.recipe,
                              "artifact": str(context.artifact), "input_names": context.input_names,
                              "output_names": context.output_names,
                              "model": str(context.model) if context.model else None}
        self._format = format_id
        self._timeout = timeout
        self._processes = _Processes()
        weakref.finalize(self, self._processes.close)
        try:
            loaded = self._start()
        except BaseException:
            self._processes.close()
            raise
        self.facts = {**loaded["facts"], "isolated": "run in a worker process (isolate_runtime)"}
        self._declared = loaded["declared_shapes"]

    def _start(self) -> dict[str, Any]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self._processes.worker = Worker(
            [sys.executable, "-u", "-X", "faulthandler", "-m", "modelparity.runner_worker"],
            self._processes.scratch / "worker.log", f"{self._format} worker", self._timeout, env)
        return self._request("load", **self._load_request)

    def _request(self, operation: str, **arguments: Any) -> Any:
        worker = self._processes.worker
        assert worker is not None
        try:
            return worker.request(operation, **arguments)
        except WorkerError as error:
            if error.died:
                self._processes.stop_worker()  # the next run starts a new worker
            raise RuntimeError(str(error)) from None

    def declared_shapes(self) -> dict[str, list[int | None]] | None:
        return self._declared

    def timed_call(self, inputs: Any) -> Any:
        raise NotTimeable("it runs in a worker process; suites/latency loads it in process instead")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._processes.worker is None:
            self._start()
        scratch = self._processes.scratch
        feeds, answers = scratch / "inputs.npz", scratch / "outputs.npz"
        np.savez(feeds, **inputs)
        self._request("run", inputs=str(feeds), outputs=str(answers))
        with np.load(answers) as data:
            return {name: data[name] for name in self._load_request["output_names"]}


def _serve() -> None:
    """The child: answer load and run requests on the original stdout; everything else to stderr."""
    from modelparity.formats import build_graph

    protocol = sys.stdout
    sys.stdout = sys.stderr
    runner: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "load":
                graph = build_graph(request["recipe"]["options"], request["recipe"]["plugins"])
                node = graph.nodes[request["format_id"]]
                assert node.load is not None
                runner = node.load(LoadContext(Path(request["artifact"]), node.params,
                                               request["input_names"], request["output_names"],
                                               Path(request["model"]) if request["model"] else None))
                declared = runner.declared_shapes() if hasattr(runner, "declared_shapes") else None
                result: Any = {"facts": runner.facts, "declared_shapes": declared}
            elif request["op"] == "run":
                with np.load(request["inputs"]) as data:
                    inputs = {name: data[name] for name in data.files}
                np.savez(request["outputs"], **runner.run(inputs))
                result = {}
            else:
                raise ValueError(f"unknown operation {request['op']!r}")
            answer = {"ok": True, "result": result}
        except Exception as error:  # the parent needs every failure as data
            answer = {"ok": False, "error": {"type": type(error).__name__, "message": str(error),
                                             "traceback": traceback.format_exc(limit=-4)}}
        protocol.write(json.dumps(answer, default=str) + "\n")
        protocol.flush()


if __name__ == "__main__":
    _serve()
