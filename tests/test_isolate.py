"""Isolation: a converter that crashes, raises or hangs is contained and explained."""

import time

import pytest

from modelparity.isolate import IsolatedError, run_isolated

HERE = __file__


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


def test_result_comes_back_and_output_is_logged(tmp_path):
    assert run_isolated(f"{HERE}:add", {"a": 2, "b": 3}, 60, tmp_path / "log") == 5
    assert "adding" in (tmp_path / "log").read_text()


def test_segfault_is_reported_with_signal_and_output(tmp_path):
    with pytest.raises(IsolatedError) as error:
        run_isolated(f"{HERE}:segfault", {}, 60, tmp_path / "log")
    assert error.value.kind == "crashed"
    assert "crashed with SIGSEGV" in str(error.value)
    assert "about to crash" in error.value.tail
    assert "Fatal Python error: Segmentation fault" in error.value.tail


def test_hang_is_killed_at_the_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(IsolatedError) as error:
        run_isolated(f"{HERE}:sleep_forever", {}, 3, tmp_path / "log")
    assert error.value.kind == "timeout"
    assert "did not finish within 3 s" in str(error.value)
    assert "sleeping" in error.value.tail
    assert time.monotonic() - started < 30


def test_exception_is_reported_with_its_traceback(tmp_path):
    with pytest.raises(IsolatedError) as error:
        run_isolated(f"{HERE}:raise_error", {}, 60, tmp_path / "log")
    assert error.value.kind == "raised"
    assert "ValueError: unsupported operator Foo" in str(error.value)
    assert "Traceback" in error.value.tail
