"""A format whose runner's process is killed the first time it runs (the test kills it: a lost Ray
worker); loaded with --format-plugin. MODELPARITY_TEST_DIES_ONCE names the file where each attempt
writes its process id, and the first one also in FILE.first; it waits there to be killed, the next
ones run normally."""

import os
import time
from pathlib import Path

from modelparity.formats.base import TORCH, Format
from modelparity.formats.torchscript import TorchScriptRunner


class DiesOnceRunner(TorchScriptRunner):
    def run(self, inputs):
        marker = Path(os.environ["MODELPARITY_TEST_DIES_ONCE"])
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        try:  # one first attempt, also when b1 and b4 start at once: it names itself in .first
            first = os.open(f"{marker}.first", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().run(inputs)
        os.write(first, f"{os.getpid()}\n".encode())
        os.close(first)
        time.sleep(120)  # killed here by the test
        return super().run(inputs)


def formats(graph, options):
    return [Format("dies-once", parent="torchscript", load=DiesOnceRunner, requires=(TORCH,))]
