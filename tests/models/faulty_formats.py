"""Formats whose runtime misbehaves in the ways a deployment does, loaded with --format-plugin by
the fault-injection tests (tests/test_faults.py): each must end as its own check's failed record,
and never take the session or its report down."""

import ctypes
import os
import time

import numpy as np

from modelparity.formats.base import ONNXRUNTIME, Format
from modelparity.formats.onnxruntime import OnnxRuntimeRunner


class NanRunner(OnnxRuntimeRunner):
    """Answers NaN everywhere (a kernel reading uninitialised memory, a broken FP16 cast)."""

    def run(self, inputs):
        return {k: np.full_like(v, np.nan) for k, v in super().run(inputs).items()}


class InfRunner(OnnxRuntimeRunner):
    """Answers +Inf everywhere (an FP16 overflow)."""

    def run(self, inputs):
        return {k: np.full_like(v, np.inf) for k, v in super().run(inputs).items()}


class ListRunner(OnnxRuntimeRunner):
    """Returns its outputs as a list, not a dict of name -> array."""

    def run(self, inputs):
        return list(super().run(inputs).values())


class RenamingRunner(OnnxRuntimeRunner):
    """Returns its outputs under names the spec does not have."""

    def run(self, inputs):
        return {f"renamed_{k}": v for k, v in super().run(inputs).items()}


class SegfaultAtLoadRunner(OnnxRuntimeRunner):
    """ONNX Runtime crashing while it creates the session (a user's LSTM FP16 file did)."""

    def __init__(self, context):
        ctypes.string_at(0)


class HangingRunner(OnnxRuntimeRunner):
    """Never answers (MODELPARITY_TEST_HANG_SECONDS, default 0): a runtime stuck in a kernel."""

    def run(self, inputs):
        time.sleep(float(os.environ.get("MODELPARITY_TEST_HANG_SECONDS", "0")))
        return super().run(inputs)


RUNNERS = {"nan": NanRunner, "inf": InfRunner, "list": ListRunner, "renaming": RenamingRunner,
           "segfault-at-load": SegfaultAtLoadRunner, "hanging-run": HangingRunner}


def formats(graph, options):
    return [Format(name, parent="onnx-dynamo", load=runner, requires=(ONNXRUNTIME,))
            for name, runner in RUNNERS.items()]
