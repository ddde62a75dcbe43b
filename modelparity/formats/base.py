"""What a format is: one node of the conversion graph, declared as data.

A node may build an artifact (a function run in a child process, referenced as "module:function")
and may load a runner (in the test process). A node without a builder runs its nearest ancestor's
artifact with its own options (e.g. ONNX Runtime at one optimisation level). Its id is its parent's
id and its own name joined by "-", so `onnx-dynamo-fp16-ort` reads as the chain it is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Runner(Protocol):
    """Takes and returns named arrays in the model's own layout; `facts` says what really ran.

    A runner may also define `declared_shapes() -> {tensor: [size or None]}`: the input (and, where
    the runtime says, output) shapes its artifact declares, in the model's layout, None where a dim
    is symbolic (suites/dynamic checks that every declared dynamic axis is symbolic there). Formats
    that cannot tell leave it out.

    A runner may also define `timed_call(inputs) -> Callable[[], object]`: the runtime's own inference
    call with the inputs already prepared (layout, dtype, quantisation, resizing done once, outside),
    returning the runtime's raw outputs. suites/latency times that call alone; a runner without it
    is timed through run(), and the report says so. A runner whose runtime cannot be timed in this
    process raises NotTimeable from it. `runtime_modules` (a class attribute) names the modules its
    loader imports, so the memory probe can import them before measuring the session build.
    """

    facts: dict[str, Any]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class NotApplicable(Exception):
    """Raised by a builder whose conversion has nothing to do for this model (an INT8 quantiser and
    a model without MatMul/Conv/Gemm): the format is reported as not applicable, with the reason,
    never as a conversion failure. Raised by a runner's run() or timed_call() whose runtime cannot
    execute on this machine (Core ML off macOS), after its constructor checked what it can of the
    artifact (its declared interface): every suite reports the check as not applicable, with the
    reason (parity's record keeps the runner's facts; suites/dynamic still judges its declared
    shapes)."""


class NotTimeable(RuntimeError):
    """The runner's runtime runs outside this process; timing it here would time the pipe."""


@dataclass(frozen=True)
class Requirement:
    """A Python module a format needs, and how to install it."""

    module: str
    install: str

    def problem(self) -> str | None:
        """Why the requirement is not met here, with the fix (None when it is met)."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"{self.module} is not installed: {self.install}"


@dataclass(frozen=True)
class EnvironmentRequirement:
    """Something outside the Python environment a format needs (e.g. a separate virtualenv).

    `check` returns why it is absent, or None; `install` is the command that provides it.
    """

    module: str
    install: str
    check: Callable[[], str | None]

    def problem(self) -> str | None:
        reason = self.check()
        return None if reason is None else f"{reason}: install it with `{self.install}`"


@dataclass(frozen=True)
class LoadContext:
    """What a runner is loaded from."""

    artifact: Path
    params: Mapping[str, Any]
    input_names: list[str]
    output_names: list[str]
    model: Path | None = None  # the root artifact (ModelArtifact): for runners that need the spec


@dataclass(frozen=True)
class Format:
    """A node of the conversion graph.

    build: "module:function" called in a child as function(source, out, params, model) -> info dict:
        source is the parent artifact's directory, out the directory to fill, model the root
        artifact's directory (the pickled module, export and calibration inputs).
    load: builds a Runner from a LoadContext, in the test process.
    precision: the tolerance profile its outputs are held to.
    applies: given machine facts, a reason the format does not apply here (None if it does).
    fixed_shapes: set when the format cannot be dynamic by design, saying why; suites/dynamic then
        requires it to refuse other shapes and reports it as static.
    device: where it runs, "cpu" or an accelerator ("cuda"); tests of accelerator formats carry the
        pytest marker `gpu`.
    runs_on: the execution provider kind it selects, as --providers names it ("cpu", "cuda",
        "tensorrt"); None: its chain's device.
    serves_http: its runner is a service over another format's runner (the HTTP checks and the
        load test apply to it).
    times_natively: its runner's program also times itself (`native_latency(inputs, warmup,
        repeat)`), reported beside the harness's timing in suites/latency.
    isolate_runtime: its runtime is native code that has crashed processes: parity and dynamic run
        its runner in a worker process (modelparity/runner_worker.py).
    custom_ops: it carries a model's custom operators (modelparity/custom_ops.py): its converter
        applies the spec's mappings, or its runtime loads their kernels. A check of a chain where
        every node does so fails on an error naming the operator; elsewhere that error is reported
        as 'unsupported' (an expected failure carrying the converter's own words).
    """

    name: str
    parent: str | None = None
    build: str | None = None
    load: Callable[[LoadContext], Runner] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    requires: tuple[Requirement | EnvironmentRequirement, ...] = ()
    applies: Callable[[Mapping[str, Any]], str | None] | None = None
    produces: str | None = None
    fixed_shapes: str | None = None
    device: str = "cpu"
    runs_on: str | None = None
    serves_http: bool = False
    times_natively: bool = False
    isolate_runtime: bool = False
    custom_ops: bool = False
    description: str = ""

    @property
    def id(self) -> str:
        return f"{self.parent}-{self.name}" if self.parent else self.name


TORCH = Requirement("torch", "pip install torch==2.14.1 torchvision==0.29.1")
ONNX = Requirement("onnx", "pip install 'modelparity[onnx]'")
ONNXSCRIPT = Requirement("onnxscript", "pip install 'modelparity[onnx]'")
ONNXRUNTIME = Requirement("onnxruntime", "pip install 'modelparity[cpu]' (on an NVIDIA GPU machine "
                                         "'modelparity[gpu]' instead: never both)")
ONNXCONVERTER_COMMON = Requirement("onnxconverter_common", "pip install 'modelparity[onnx]'")
OPENVINO = Requirement("openvino", "pip install 'modelparity[openvino]'")
