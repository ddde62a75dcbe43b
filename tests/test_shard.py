"""--shard K/N: whole conversion families per shard, deterministic, and shards that together with
`python -m modelparity.report merge` give one run's checks and verdicts without building any
artifact twice (two machines sharing one S3 store, each with its own cache)."""

import json
import subprocess
import sys

import pytest

from fixtures.shard import assign, family_seconds, parse_shard, read_durations

from .conftest import ROOT, TINY

FORMATS = "torchscript,onnx-dynamo-ort,onnx-dynamo-fp16-ort,onnx-legacy-op17-ort"


def test_families_go_heaviest_first_to_the_lightest_shard():
    weights = {"m::onnx-dynamo": 9, "m::torchscript": 4, "m::onnx-legacy-op17": 4, "m::eager": 2}
    placed = assign(weights, 2)
    assert placed == {"m::onnx-dynamo": 0, "m::onnx-legacy-op17": 1, "m::torchscript": 1, "m::eager": 1}
    assert assign(dict(reversed(list(weights.items()))), 2) == placed, "the order given does not matter"
    assert set(assign(weights, 8).values()) == {0, 1, 2, 3}, "more shards than families: some are empty"


@pytest.mark.parametrize("value", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_says_what_is_expected(value):
    with pytest.raises(pytest.UsageError, match=r"expected K/N with 1 <= K <= N"):
        parse_shard(value)


def test_measured_durations_weigh_a_family_by_its_conversions_and_checks(tmp_path):
    def check(fmt, root, built, seconds):
        return {"model_reference": "zoo:m", "format": fmt, "chain": [{"id": root}], "test_seconds": seconds,
                "phases": {"build": 0.5}, "build": [{"node": fmt, "built_now": built, "build_seconds": 10.0}]}
    report = {"checks": [check("onnx-dynamo-ort", "onnx-dynamo", True, 2.5),
                         check("onnx-dynamo-ort", "onnx-dynamo", False, 1.5),
                         check("torchscript", "torchscript", True, 0.5)]}
    assert family_seconds(report) == {"zoo:m::onnx-dynamo": 10.0 + 2.0 + 1.0, "zoo:m::torchscript": 10.0}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(pytest.UsageError, match=r"--shard-durations .*broken.json: not a parity report"):
        read_durations(str(tmp_path / "broken.json"))


def _verdicts(report: dict) -> dict[str, str]:
    return {check["test_id"]: check["status"] for check in report["checks"]}


def _built(report: dict) -> list[tuple[str, str]]:
    """(model, node) of every conversion this run built (a node is built_now in one record only)."""
    return [(check["model"], step["node"]) for check in report["checks"]
            for step in check.get("build", []) if step["built_now"]]


def test_two_shards_merged_are_one_run_with_no_artifact_built_twice(run_parity, s3_server, tmp_path):
    whole = run_parity("--model", f"{TINY}:build", "--formats", FORMATS)
    whole.assert_outcomes(passed=9)  # 8 checks and the model's reference check
    single = json.loads((whole.reports / "parity.json").read_text())
    options = [f"--store-option={name}={json.dumps(value)}" for name, value in s3_server.items()]
    shards = []
    for index in (1, 2):
        result = run_parity("--model", f"{TINY}:build", "--formats", FORMATS, "--shard", f"{index}/2",
                            "--store", "s3://modelparity/shard-test", "--store-cache",
                            str(tmp_path / f"cache{index}"), "--report-dir", str(tmp_path / f"shard{index}"),
                            *options)
        assert result.ret == 0, result.stdout.str()[-3000:]
        result.stdout.fnmatch_lines([f"modelparity: shard {index}/2: * of 3 conversion families, * checks"])
        shards.append(json.loads((tmp_path / f"shard{index}" / "parity.json").read_text()))
    assert all(shard["checks"] for shard in shards), "each shard has work"
    assert [shard["session"]["shard"] for shard in shards] == ["1/2", "2/2"]
    built = [_built(shard) for shard in shards]
    assert built[0] and built[1] and not set(built[0]) & set(built[1]), built
    assert len(built[0] + built[1]) == len(set(built[0] + built[1])), "nothing built twice"

    merged = subprocess.run([sys.executable, "-m", "modelparity.report", "merge", str(tmp_path / "shard1"),
                             str(tmp_path / "shard2"), "--out", str(tmp_path / "merged")],
                            capture_output=True, text=True, cwd=ROOT)
    assert merged.returncode == 0, merged.stderr
    report = json.loads((tmp_path / "merged" / "parity.json").read_text())
    assert _verdicts(report) == _verdicts(single)
    assert report["summary"]["passed"] == single["summary"]["passed"] == 8
    assert (tmp_path / "merged" / "parity.html").is_file()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_shard_left_empty_passes_with_its_empty_report(run_parity, tmp_path, workers):
    """Four jobs for three families: the fourth has nothing to do, and says so without failing CI.
    Under pytest-xdist the workers split and the controller, which collects nothing, is told."""
    result = run_parity("--model", f"{TINY}:build", "--formats", FORMATS, "--shard", "4/4",
                        "--report-dir", str(tmp_path / "shard4"), *workers)
    assert result.ret == 0, result.stdout.str()[-2000:]
    # (the model's reference check went with its model's families, not to the empty shard)
    result.stdout.fnmatch_lines(["modelparity: shard 4/4: 0 of 3 conversion families, 0 of 9 checks"])
    report = json.loads((tmp_path / "shard4" / "parity.json").read_text())
    assert report["session"]["shard"] == "4/4" and report["run"]["complete"] and report["checks"] == []
