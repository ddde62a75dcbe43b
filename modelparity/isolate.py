"""Run a conversion in a child Python process with a timeout, so a crash or hang stays contained.

The parent writes a request (target function, keyword arguments) as JSON; the child imports the
target ("package.module:function" or "path/to/file.py:function"), calls it, and writes the result as
JSON. Everything the child prints goes to a log file kept next to the artifact. A child that exits by
a signal, raises, or outlives its timeout becomes an `IsolatedError` with the tail of that log.

The child runs in its own session (a Ctrl-C at the terminal reaches the parent only), so the parent
kills the child's process group, grandchildren included, at the timeout and whenever it stops
waiting for another reason: an exception (KeyboardInterrupt) or SIGTERM/SIGHUP, which would
otherwise end the parent at once and leave the converter running without its timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from modelparity.formats.base import NotApplicable
from modelparity.references import import_target

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
TAIL_LINES = 25


class IsolatedError(RuntimeError):
    """The child failed. `kind` is 'crashed', 'raised', 'timeout', 'import' (an ImportError: the
    environment's fault, not the converter's) or 'not-applicable' (the builder raised NotApplicable:
    nothing to convert, not a failure); `tail` is the end of its log."""

    def __init__(self, kind: str, message: str, tail: str) -> None:
        super().__init__(f"{message}\n--- last lines of the converter's output ---\n{tail}")
        self.kind = kind
        self.summary = message
        self.tail = tail


_LIVE_GROUPS: set[int] = set()  # process groups of the children being waited for
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone already
        pass


def _on_ending_signal(signum: int, frame: FrameType | None) -> None:
    """Kill the converter children, then do what the signal did before: the previous Python
    handler, or the default action (the process ends by this signal)."""
    for pgid in list(_LIVE_GROUPS):
        _kill_group(pgid)
    previous = _PREVIOUS_HANDLERS.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _guard_ending_signals() -> None:
    """Install _on_ending_signal from the main thread (the only one that may) for each signal
    that is not ignored, at every call: a handler installed since is chained (called after the kill;
    an exception it raises reaches the `except BaseException` around the wait). In another thread
    only that `except` protects."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _ENDING_SIGNALS:
        current = signal.getsignal(signum)
        if current in (signal.SIG_IGN, _on_ending_signal) or current is None:
            continue
        _PREVIOUS_HANDLERS[signum] = current
        signal.signal(signum, _on_ending_signal)


def run_isolated(target: str, kwargs: dict[str, Any], timeout: float, log_path: Path) -> Any:
    """Call `target(**kwargs)` in a child process; return its JSON-serialisable result."""
    _guard_ending_signals()
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
        _LIVE_GROUPS.add(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            raise IsolatedError("timeout", f"{target} did not finish within {timeout:g} s and was "
                                "killed (raise --build-timeout if it is just slow)",
                                _tail(log_path)) from None
        except BaseException:  # KeyboardInterrupt, or a signal handler's exception: no orphans
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            _LIVE_GROUPS.discard(process.pid)
    if code < 0:
        name = signal.Signals(-code).name
        raise IsolatedError("crashed", f"{target} crashed with {name}", _tail(log_path))
    if not response.exists():
        raise IsolatedError("crashed", f"{target} exited with code {code} without a result",
                            _tail(log_path))
    answer = json.loads(response.read_text())
    if "not_applicable" in answer:
        raise IsolatedError("not-applicable", answer["not_applicable"], "")
    if answer.get("import_error"):
        raise IsolatedError("import", f"{target} could not import what it needs: {answer['error']}",
                            _tail(log_path))
    if "error" in answer:
        raise IsolatedError("raised", f"{target} raised {answer['error']}", _tail(log_path))
    return answer["result"]


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def environment_lacks(error: ImportError) -> bool:
    """Whether an ImportError is the environment's (a backend not installed, a native library it
    cannot load), not the converter's own: onnx2tf importing `onnx2tf.ops.ScaledSilu` for an
    operator it has no converter for is a conversion failure, stored like any other."""
    top = (error.name or "").split(".")[0]
    return not top or importlib.util.find_spec(top) is None


def _child(request_path: str, response_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    try:
        result = import_target(request["target"])(**request["kwargs"])
        answer: dict[str, Any] = {"result": result}
    except NotApplicable as error:
        answer = {"not_applicable": str(error)}
    except ImportError as error:
        traceback.print_exc()
        answer = {"error": f"{type(error).__name__}: {error}",
                  "import_error": environment_lacks(error)}
    except BaseException as error:  # the parent needs every failure as data
        traceback.print_exc()
        answer = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.flush()
    Path(response_path).write_text(json.dumps(answer, default=str))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
