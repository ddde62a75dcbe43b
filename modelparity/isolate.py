"""Run a conversion in another Python process with a timeout, so a crash or hang stays contained.

Two ways, with the same errors: `run_isolated` starts a fresh child for one call (what the memory
probe needs: a process that has imported nothing else), and `ConversionWorkers` keeps long-lived
child processes, one per conversion family (torch, ONNX, OpenVINO, TensorFlow...) and busy
conversion, each answering one call at a time, so that a session pays the seconds of importing torch
or TensorFlow once per family, not once per conversion. The target is "package.module:function" or
"path/to/file.py:function", called with JSON keyword arguments; its JSON result comes back.
Everything a call prints (Python and native code alike: the worker points its file descriptors 1
and 2 at the call's log) goes to a log file kept next to the artifact. A child that exits by a
signal, raises, or outlives its timeout becomes an `IsolatedError` with the tail of that log; a
worker that crashed or hung is killed and forgotten, and the next call of its family starts another.

The child runs in its own session (a Ctrl-C at the terminal reaches the parent only), so the parent
kills the child's process group, grandchildren included, at the timeout and whenever it stops
waiting for another reason: an exception (KeyboardInterrupt) or SIGTERM/SIGHUP, which would
otherwise end the parent at once and leave the converter running without its timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from modelparity.formats.base import NotApplicable
from modelparity.references import import_module_of, import_target

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
    with open(log_path, "wb") as log:
        # -u: what the converter printed before a crash reaches the log; faulthandler: a crash
        # leaves the Python stack where it happened.
        process = subprocess.Popen([sys.executable, "-u", "-X", "faulthandler", "-m",
                                    "modelparity.isolate", str(request), str(response)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_child_environment(), start_new_session=True)
        _LIVE_GROUPS.add(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            raise _timed_out(target, timeout, log_path) from None
        except BaseException:  # KeyboardInterrupt, or a signal handler's exception: no orphans
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            _LIVE_GROUPS.discard(process.pid)
    if code < 0 or not response.exists():
        raise _died(target, code, log_path)
    return _result(target, json.loads(response.read_text()), log_path)


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env


def _timed_out(target: str, timeout: float, log_path: Path) -> IsolatedError:
    return IsolatedError("timeout", f"{target} did not finish within {timeout:g} s and was killed "
                         "(raise --build-timeout if it is just slow)", _tail(log_path))


def _died(target: str, code: int, log_path: Path) -> IsolatedError:
    how = (f"crashed with {signal.Signals(-code).name}" if code < 0
           else f"exited with code {code} without a result")
    return IsolatedError("crashed", f"{target} {how}", _tail(log_path))


def _result(target: str, answer: dict[str, Any], log_path: Path) -> Any:
    """The call's result, or its failure as an IsolatedError."""
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


class ConversionWorkers:
    """Long-lived conversion processes: `run(family, ...)` takes an idle worker of the family, or
    starts one, so calls from several threads run in parallel, one per worker. A worker that crashed,
    hung or was interrupted mid-call is killed with its process group and never reused."""

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="modelparity-converters-")
        self._idle: dict[str, list[_ConversionWorker]] = {}
        self._busy: set[_ConversionWorker] = set()
        self._lock = threading.Lock()
        self._started = 0

    def run(self, family: str, target: str, kwargs: dict[str, Any], timeout: float,
            log_path: Path) -> Any:
        """As run_isolated, in a worker of `family`."""
        _guard_ending_signals()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            idle = self._idle.setdefault(family, [])
            if idle:
                worker = idle.pop()
            else:
                self._started += 1
                worker = _ConversionWorker(Path(self._scratch.name) / f"{family}-{self._started}.log",
                                           family)
            self._busy.add(worker)
        try:
            answer = worker.call(target, kwargs, timeout, log_path)
        except BaseException:
            worker.kill()
            raise
        finally:
            with self._lock:
                self._busy.discard(worker)
        with self._lock:
            self._idle.setdefault(family, []).append(worker)
        return _result(target, answer, log_path)

    def preload(self, family: str, modules: list[str]) -> None:
        """Start a worker of `family` now, importing `modules` (names, or "file.py:function"
        references) while the caller does other work: the first conversion then finds them
        imported. What fails to import is the conversion's to report, not this."""
        with self._lock:
            if self._idle.get(family) or any(w.family == family for w in self._busy):
                return
            self._started += 1
            worker = _ConversionWorker(Path(self._scratch.name) / f"{family}-{self._started}.log", family)
            worker.preload(modules)
            self._idle.setdefault(family, []).append(worker)

    def pids(self) -> dict[str, list[int]]:
        """Family -> the process ids of its idle workers."""
        with self._lock:
            return {family: [w.pid for w in workers] for family, workers in self._idle.items() if workers}

    def interrupt(self) -> None:
        """Kill the busy workers: their calls fail as crashed at once (how a Ctrl-C stops parallel
        conversions instead of waiting for them)."""
        with self._lock:
            for worker in list(self._busy):
                worker.kill()

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            for worker in [w for workers in self._idle.values() for w in workers]:
                worker.kill()
            self._idle.clear()
        self._scratch.cleanup()


class _ConversionWorker:
    """One `python -m modelparity.isolate --serve` process, in its own session (its process group is
    killed at a timeout, grandchildren included), listed in _LIVE_GROUPS while it lives."""

    def __init__(self, log: Path, family: str) -> None:
        self.family = family
        self._preloading = False
        with open(log, "wb") as own_output:
            self._process = subprocess.Popen(
                [sys.executable, "-u", "-X", "faulthandler", "-m", "modelparity.isolate", "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=own_output, bufsize=0,
                env=_child_environment(), start_new_session=True)
        self._received = b""  # read from the pipe, not yet a whole answer
        _LIVE_GROUPS.add(self._process.pid)
        self._killed = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def preload(self, modules: list[str]) -> None:
        """Ask for the imports without waiting; the next call reads (and drops) the answer."""
        self._send({"preload": modules})
        self._preloading = True

    def call(self, target: str, kwargs: dict[str, Any], timeout: float, log_path: Path
             ) -> dict[str, Any]:
        """The answer to one call; its timeout counts from here (a preload still running, such as
        TensorFlow's import, is part of the call's time)."""
        deadline = time.monotonic() + timeout
        log_path.write_bytes(b"")
        self._send({"target": target, "kwargs": kwargs, "log": str(log_path)})
        if self._preloading:
            self._answer(target, deadline, timeout, log_path)
            self._preloading = False
        return self._answer(target, deadline, timeout, log_path)

    def _send(self, request: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write((json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            pass  # it died between calls; reading says how

    def _answer(self, target: str, deadline: float, timeout: float, log_path: Path
                ) -> dict[str, Any]:
        """The next answer line. Read with os.read into our own buffer: a buffered reader could
        hold the next answer too (a preload's and a quick call's arrive together), where select
        no longer sees it."""
        assert self._process.stdout is not None
        descriptor = self._process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(descriptor, selectors.EVENT_READ)
            while b"\n" not in self._received:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise _timed_out(target, timeout, log_path)
                chunk = os.read(descriptor, 1 << 16)
                if not chunk:
                    self.kill()
                    raise _died(target, self._process.wait(), log_path)
                self._received += chunk
        line, self._received = self._received.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        if self._killed:  # the pid may belong to another process by now
            return
        self._killed = True
        _kill_group(self._process.pid)
        self._process.wait()
        _LIVE_GROUPS.discard(self._process.pid)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()


def _call(request: dict[str, Any]) -> dict[str, Any]:
    """Call the request's target; every outcome as data (the parent classifies it)."""
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
    sys.stderr.flush()
    return answer


def _child(request_path: str, response_path: str) -> None:
    answer = _call(json.loads(Path(request_path).read_text()))
    Path(response_path).write_text(json.dumps(answer, default=str))


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `log` for one call: native code's output goes there too,
    and so does faulthandler's stack if the call crashes the worker."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)


def _preload(modules: list[str]) -> list[str]:
    """Import what the coming conversions need; the names of those that failed. torch and its
    compiler first: coremltools imports TensorFlow where it is installed, and triton (which
    torch._dynamo loads) crashes the process (SIGSEGV in the next torch.export) when it loads after
    TensorFlow."""
    if "torch" in modules:
        modules = ["torch", "torch._dynamo", *(m for m in modules if m != "torch")]
    failed = []
    for name in modules:
        try:
            import_module_of(name) if ":" in name else importlib.import_module(name)
        except Exception:  # the conversion that needs it reports it, with its traceback
            failed.append(name)
    return failed


def _serve() -> None:
    """The worker: one JSON request a line on stdin, one answer a line on the original stdout (kept
    as its own descriptor; descriptor 1 then goes where stderr goes between calls)."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        if "preload" in request:
            answer = {"result": _preload(request["preload"])}
        else:
            with _output_to(Path(request["log"])):
                answer = _call(request)
        protocol.write(json.dumps(answer, default=str) + "\n")
        protocol.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        _child(sys.argv[1], sys.argv[2])
