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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, with a bucket: the shared
    store's filesystem arguments, as [tool.modelparity] store_options would give them."""
    import socket
    import subprocess
    import sys
    import time

    boto3 = pytest.importorskip("boto3", reason="pip install 'modelparity[distributed,dev]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket="modelparity")
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.2)
    yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
           "client_kwargs": {"region_name": "us-east-1"}}
    server.kill()
    server.wait()
    log.close()
