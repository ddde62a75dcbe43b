"""Isolation: a converter that crashes, raises or hangs is contained and explained, in a fresh child
(run_isolated) and in a long-lived conversion worker (ConversionWorkers) alike."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelparity.isolate import ConversionWorkers, IsolatedError, run_isolated

HERE = __file__
ROOT = Path(__file__).resolve().parent.parent


def add(a, b):
    print("adding")
    return a + b


def segfault():
    import ctypes

    print("about to crash")
    ctypes.string_at(0)


def sleep_forever():
    print("sleeping", flush=True)
    time.sleep(3600)


def raise_error():
    raise ValueError("unsupported operator Foo")


@pytest.fixture(params=["fresh-child", "worker"])
def isolated(request):
    """`isolated(target, kwargs, timeout, log)`: one call, the way the parametrisation names."""
    if request.param == "fresh-child":
        yield run_isolated
        return
    workers = ConversionWorkers()
    yield lambda *args: workers.run("test", *args)
    workers.close()


def test_result_comes_back_and_output_is_logged(tmp_path, isolated):
    assert isolated(f"{HERE}:add", {"a": 2, "b": 3}, 60, tmp_path / "log") == 5
    assert "adding" in (tmp_path / "log").read_text()


def test_segfault_is_reported_with_signal_and_output(tmp_path, isolated):
    with pytest.raises(IsolatedError) as error:
        isolated(f"{HERE}:segfault", {}, 60, tmp_path / "log")
    assert error.value.kind == "crashed"
    assert "crashed with SIGSEGV" in str(error.value)
    assert "about to crash" in error.value.tail
    assert "Fatal Python error: Segmentation fault" in error.value.tail


def test_hang_is_killed_at_the_timeout(tmp_path, isolated):
    started = time.monotonic()
    with pytest.raises(IsolatedError) as error:
        isolated(f"{HERE}:sleep_forever", {}, 3, tmp_path / "log")
    assert error.value.kind == "timeout"
    assert "did not finish within 3 s" in str(error.value)
    assert "sleeping" in error.value.tail
    assert time.monotonic() - started < 30


def test_exception_is_reported_with_its_traceback(tmp_path, isolated):
    with pytest.raises(IsolatedError) as error:
        isolated(f"{HERE}:raise_error", {}, 60, tmp_path / "log")
    assert error.value.kind == "raised"
    assert "ValueError: unsupported operator Foo" in str(error.value)
    assert "Traceback" in error.value.tail


def import_missing_backend():
    import modelparity_backend_not_installed  # noqa: F401


def spawn_and_sleep(pids):
    """A converter that starts a helper process (as a TF or TensorRT build may) and hangs."""
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path(pids + ".partial").write_text(f"{os.getpid()} {helper.pid}")
    os.replace(pids + ".partial", pids)
    time.sleep(3600)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (PID 1 of a container may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _await_pids(path: Path, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, "the converter did not start"
        time.sleep(0.02)
    return [int(pid) for pid in path.read_text().split()]


def _await_gone(pids: list[int], seconds: float = 5) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [pid for pid in pids if _alive(pid)]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_import_error_is_its_own_kind(tmp_path, isolated):
    with pytest.raises(IsolatedError) as error:
        isolated(f"{HERE}:import_missing_backend", {}, 60, tmp_path / "log")
    assert error.value.kind == "import"
    assert "ModuleNotFoundError: No module named 'modelparity_backend_not_installed'" in str(error.value)


def import_missing_converter_part():
    import onnx.no_such_converter_for_this_operator  # noqa: F401 (onnx is installed; its part is not)


def test_a_missing_part_of_an_installed_package_is_the_converters_own_failure(tmp_path, isolated):
    """onnx2tf imports onnx2tf.ops.<OP> for each operator: an operator it lacks is a conversion
    failure (stored), not a backend to install."""
    with pytest.raises(IsolatedError) as error:
        isolated(f"{HERE}:import_missing_converter_part", {}, 60, tmp_path / "log")
    assert error.value.kind == "raised"


def test_a_timeout_kills_the_converters_own_children_too(tmp_path, isolated):
    pids = []
    try:
        with pytest.raises(IsolatedError) as error:
            isolated(f"{HERE}:spawn_and_sleep", {"pids": str(tmp_path / "pids")}, 3, tmp_path / "log")
        assert error.value.kind == "timeout"
        pids = _await_pids(tmp_path / "pids", 0)
        assert _await_gone(pids) == []
    finally:
        _kill(pids)


def worker_pid():
    return os.getpid()


def remember(value):
    """Module state: a worker is one process across calls (what saves the imports)."""
    sys.modules[__name__].__dict__.setdefault("remembered", []).append(value)
    return sys.modules[__name__].remembered


def test_a_worker_serves_its_family_again_and_each_call_has_its_own_log(tmp_path):
    workers = ConversionWorkers()
    try:
        first = workers.run("torch", f"{HERE}:remember", {"value": 1}, 60, tmp_path / "a.log")
        second = workers.run("torch", f"{HERE}:remember", {"value": 2}, 60, tmp_path / "b.log")
        other = workers.run("openvino", f"{HERE}:remember", {"value": 3}, 60, tmp_path / "c.log")
        assert (first, second, other) == ([1], [1, 2], [3])
        workers.run("torch", f"{HERE}:add", {"a": 1, "b": 1}, 60, tmp_path / "d.log")
        assert (tmp_path / "d.log").read_text() == "adding\n"
        assert (tmp_path / "a.log").read_text() == ""
    finally:
        workers.close()


def test_a_crashed_or_hung_worker_is_replaced_and_the_next_call_succeeds(tmp_path):
    workers = ConversionWorkers()
    try:
        before = workers.run("f", f"{HERE}:worker_pid", {}, 60, tmp_path / "0.log")
        for target, timeout in (("segfault", 60), ("sleep_forever", 3)):
            with pytest.raises(IsolatedError):
                workers.run("f", f"{HERE}:{target}", {}, timeout, tmp_path / f"{target}.log")
            assert not _alive(before)
            after = workers.run("f", f"{HERE}:worker_pid", {}, 60, tmp_path / "1.log")
            assert after != before
            before = after
    finally:
        workers.close()


def test_calls_from_two_threads_run_in_two_workers_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    workers = ConversionWorkers()
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            pids = list(pool.map(lambda i: workers.run("f", f"{HERE}:sleep_then_pid", {}, 60,
                                                       tmp_path / f"{i}.log"), range(2)))
        assert len(set(pids)) == 2
        assert time.monotonic() - started < 2 * SLEEP + 1.5  # started together (plus the start-up)
    finally:
        workers.close()


SLEEP = 2.0


def sleep_then_pid():
    time.sleep(SLEEP)
    return os.getpid()


PARENT = """
import signal, sys
from pathlib import Path
from modelparity.isolate import ConversionWorkers, run_isolated
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (a background job ignores it)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
if sys.argv[4] == "fresh-child":
    run_isolated(sys.argv[1], {"pids": sys.argv[2]}, 60, Path(sys.argv[3]))
else:
    ConversionWorkers().run("test", sys.argv[1], {"pids": sys.argv[2]}, 60, Path(sys.argv[3]))
"""


@pytest.mark.parametrize("how", ["fresh-child", "worker"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_converter_dies_with_its_parent(tmp_path, signum, how):
    """The child has its own session, so nothing but the parent can end it: a parent stopped by
    Ctrl-C (SIGINT) or SIGTERM must kill it and what it started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, f"{HERE}:spawn_and_sleep",
                               str(tmp_path / "pids"), str(tmp_path / "log"), how], env=env, cwd=ROOT)
    pids = []
    try:
        pids = _await_pids(tmp_path / "pids")
        parent.send_signal(signum)
        parent.wait(5)
        assert _await_gone(pids) == [], "converter (or its helper) outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        _kill(pids)


def test_answers_that_arrive_together_are_both_read(tmp_path):
    """A preload's answer and a quick call's can reach the pipe together: the second must not wait
    for data the first read already took (it did: a 600 s timeout of a 0.1 s conversion)."""
    from modelparity.isolate import _ConversionWorker

    worker = _ConversionWorker(tmp_path / "worker.log", "f")
    try:
        worker.preload(["json"])
        (tmp_path / "call.log").write_bytes(b"")
        worker._send({"target": f"{HERE}:add", "kwargs": {"a": 1, "b": 2}, "log": str(tmp_path / "call.log")})
        time.sleep(3)  # both answers are in the pipe by now
        deadline = time.monotonic() + 5
        assert worker._answer("preload", deadline, 5, tmp_path / "call.log") == {"result": []}
        assert worker._answer("add", deadline, 5, tmp_path / "call.log") == {"result": 3}
    finally:
        worker.kill()
