"""A long-lived child process that answers JSON-line requests, one at a time, for code that must not
run in the test process: onnx-tf in its own environment, and runtimes that have crashed processes.

Requests go to the child's stdin; answers come back on its stdout, one JSON object a line:
{"ok": true, "result": ...} or {"ok": false, "error": {"type", "message", "traceback"}}. The child's
stderr (where it prints everything else) goes to a log file. A child that dies, or does not answer
within the timeout (then it is killed), becomes a WorkerError with the tail of that log.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TAIL_LINES = 25


class WorkerError(RuntimeError):
    """The worker answered with an error, or died; the message carries its error or its log's tail."""

    def __init__(self, message: str, died: bool) -> None:
        super().__init__(message)
        self.died = died


class Worker:
    """One child process running `command`; `name` is how error messages call it."""

    def __init__(self, command: Sequence[str], log: Path, name: str, timeout: float = 600,
                 env: Mapping[str, str] | None = None) -> None:
        self._log_path = log
        self._name = name
        self._timeout = timeout
        self._log = open(log, "ab")
        self._process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, text=True, env=dict(env or os.environ))

    @property
    def pid(self) -> int:
        return self._process.pid

    def request(self, operation: str, **arguments: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(json.dumps({"op": operation, **arguments}) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is gone; reading says how
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(self._timeout):
                self.close()
                raise WorkerError(f"the {self._name} did not answer {operation!r} within "
                                  f"{self._timeout:g} s and was killed\n{self._tail()}", died=True)
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            how = f"crashed with {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise WorkerError(f"the {self._name} {how} during {operation!r}\n{self._tail()}", died=True)
        answer = json.loads(line)
        if not answer["ok"]:
            error = answer["error"]
            raise WorkerError(f"{self._name}: {operation!r} raised {error['type']}: {error['message']}\n"
                              f"{error['traceback']}", died=False)
        return answer["result"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._log):
            if stream is not None:
                stream.close()

    def _tail(self) -> str:
        self._log.flush()
        lines = self._log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        return f"--- last lines of the {self._name}'s output ---\n" + "\n".join(lines)
