"""The LibTorch C++ runner: built once per store with g++, matches TorchScript in Python, fails on a
perturbed TorchScript file, and is skipped (or fails, when strict) where no compiler is installed."""

import json

import pytest

from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow


def test_cpp_runner_matches_torchscript_and_fails_on_a_perturbed_file(run_parity):
    result = run_parity("--model", f"{TINY}:build", "--format-plugin", str(BROKEN_FORMATS), "--formats",
                        "torchscript-libtorch-cpp,torchscript-libtorch-cpp-perturbed")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*[[]torchscript-libtorch-cpp-perturbed vs torch[]] FAILED*"])
    report = json.loads((result.reports / "parity.json").read_text())
    clean = next(c for c in report["checks"] if c["test_id"] == "tiny-torchscript-libtorch-cpp-b4")
    assert clean["worst_abs"] < 1e-5 and clean["facts"]["runtime"].endswith("(C++ program)")


def test_a_missing_compiler_is_a_skip_with_the_package_or_a_failure_when_strict(run_parity, monkeypatch,
                                                                                 tmp_path):
    no_compiler = tmp_path / "bin"
    no_compiler.mkdir()
    monkeypatch.setenv("PATH", str(no_compiler))  # the child pytest is started by absolute path
    args = ("--model", f"{TINY}:build", "--formats", "torchscript-libtorch-cpp", "-rs")
    skipped = run_parity(*args)
    skipped.assert_outcomes(passed=1, skipped=2)
    skipped.stdout.fnmatch_lines(["*no C++ compiler: g++ is not on PATH: install it with "
                                  "`apt-get install g++*"])
    run_parity(*args, "--strict-backends").assert_outcomes(passed=1, failed=2)
