"""Run a conversion in a child Python process with a timeout, so a crash or hang stays contained.

The parent writes a request (target function, keyword arguments) as JSON; the child imports the
target ("package.module:function" or "path/to/file.py:function"), calls it, and writes the result as
JSON. Everything the child prints goes to a log file kept next to the artifact. A child that exits by
a signal, raises, or outlives its timeout becomes an `IsolatedError` with the tail of that log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from modelparity.formats.base import NotApplicable
from modelparity.references import import_target

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
TAIL_LINES = 25


class IsolatedError(RuntimeError):
    """The child failed. `kind` is 'crashed', 'raised', 'timeout' or 'not-applicable' (the builder
    raised NotApplicable: nothing to convert, not a failure); `tail` is the end of its log."""

    def __init__(self, kind: str, message: str, tail: str) -> None:
        super().__init__(f"{message}\n--- last lines of the converter's output ---\n{tail}")
        self.kind = kind
        self.summary = message
        self.tail = tail


def run_isolated(target: str, kwargs: dict[str, Any], timeout: float, log_path: Path) -> Any:
    """Call `target(**kwargs)` in a child process; return its JSON-serialisable result."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    request = log_path.with_suffix(".request.json")
    response = log_path.with_suffix(".response.json")
    request.write_text(json.dumps({"target": target, "kwargs": kwargs}))
    response.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        # -u: what the converter printed before a crash reaches the log; faulthandler: a crash
        # leaves the Python stack where it happened.
        process = subprocess.Popen([sys.executable, "-u", "-X", "faulthandler", "-m",
                                    "modelparity.isolate", str(request), str(response)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise IsolatedError("timeout", f"{target} did not finish within {timeout:g} s and was "
                                "killed (raise --build-timeout if it is just slow)",
                                _tail(log_path)) from None
    if code < 0:
        name = signal.Signals(-code).name
        raise IsolatedError("crashed", f"{target} crashed with {name}", _tail(log_path))
    if not response.exists():
        raise IsolatedError("crashed", f"{target} exited with code {code} without a result",
                            _tail(log_path))
    answer = json.loads(response.read_text())
    if "not_applicable" in answer:
        raise IsolatedError("not-applicable", answer["not_applicable"], "")
    if "error" in answer:
        raise IsolatedError("raised", f"{target} raised {answer['error']}", _tail(log_path))
    return answer["result"]


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _child(request_path: str, response_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    try:
        result = import_target(request["target"])(**request["kwargs"])
        answer: dict[str, Any] = {"result": result}
    except NotApplicable as error:
        answer = {"not_applicable": str(error)}
    except BaseException as error:  # the parent needs every failure as data
        traceback.print_exc()
        answer = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.flush()
    Path(response_path).write_text(json.dumps(answer, default=str))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
