"""Helpers for running the suites end to end in a child pytest (pytester)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "models" / "tiny_model.py"
BROKEN_FORMATS = ROOT / "tests" / "models" / "broken_formats.py"


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory):
    """One store for every end-to-end run, so the tiny model's exports are built once."""
    return tmp_path_factory.mktemp("store")


def _suite_runner(suite, pytester, shared_store, tmp_path):
    def run(*args, store=None):
        reports = tmp_path / "reports"
        result = pytester.runpytest_subprocess(
            str(ROOT / "suites" / suite), "--store", str(store or shared_store),
            "--report-dir", str(reports), "-p", "no:cacheprovider", "-p", "no:randomly", *args,
            timeout=900)
        result.reports = reports
        return result
    return run


@pytest.fixture
def run_parity(pytester, shared_store, tmp_path):
    """Run `pytest suites/parity` in a child process with a private report directory."""
    return _suite_runner("parity", pytester, shared_store, tmp_path)


@pytest.fixture
def run_batch(pytester, shared_store, tmp_path):
    """Run `pytest suites/batch` in a child process with a private report directory."""
    return _suite_runner("batch", pytester, shared_store, tmp_path)


@pytest.fixture
def run_dynamic(pytester, shared_store, tmp_path):
    """Run `pytest suites/dynamic` in a child process with a private report directory."""
    return _suite_runner("dynamic", pytester, shared_store, tmp_path)


@pytest.fixture
def run_latency(pytester, shared_store, tmp_path, monkeypatch):
    """Run `pytest suites/latency --benchmark-only` in a child process, briefly (0.05 s a benchmark).
    Under pytest-xdist the child would inherit PYTEST_XDIST_WORKER, and pytest-benchmark would then
    disable itself: the child is not an xdist worker, so the variables go."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    runner = _suite_runner("latency", pytester, shared_store, tmp_path)

    def run(*args, store=None):
        return runner("--benchmark-only", "--latency-budget", "0.05", "--latency-warmup", "0.01",
                      *args, store=store)
    return run


@pytest.fixture
def run_precision(pytester, shared_store, tmp_path):
    """Run `pytest suites/precision` in a child process with a private report directory."""
    return _suite_runner("precision", pytester, shared_store, tmp_path)


@pytest.fixture
def run_opset(pytester, shared_store, tmp_path):
    """Run `pytest suites/opset` in a child process; baselines go to a private folder."""
    runner = _suite_runner("opset", pytester, shared_store, tmp_path)

    def run(*args, store=None):
        return runner("--baseline-dir", str(tmp_path / "baselines"), *args, store=store)
    run.baselines = tmp_path / "baselines"
    return run
