"""What the harness costs over the bare pipeline, cold and warm, phase by phase: `pytest suites/parity`
against benchmarks/bare_pipeline.py (the same builders, runners and torch eager, without pytest, the
store, child processes or reports), on one selection of models and formats, in one invocation.

    python benchmarks/harness_vs_bare.py [--models resnet18] [--formats torchscript,onnx-dynamo-ort]
        [--workers N] [--keep DIR] [--json FILE]

bare cold: bare_pipeline.py into an empty work directory. bare warm: bare_pipeline.py --reuse on the
same directory (nothing converted: loads, runs and eager only). harness cold: the suite against an
empty store. harness warm: the same store again (checked from its report: nothing rebuilt).

bare_pipeline.py reports its own phases. The harness's come from its report, parity.json: each check's
`phases`, summed per key, and the session's (`session.phases`: startup, prebuild); the table
folds prebuild into build. What no phase accounts for (interpreter and pytest start-up, imports,
collection, reports) is `other`: wall minus the phases. With --workers the checks' phases add up over
the xdist workers, so the harness's `other` no longer reads as time. The last lines compare total wall
with the issue's targets: harness/bare at most 1.3x cold and 1.5x warm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Container, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FORMATS = ("torchscript,onnx-legacy-op17-ort,onnx-dynamo-ort,onnx-dynamo-fp16-ort,"
                   "onnx-dynamo-ov-irfp32-cpu,onnx-dynamo-ov-irfp16-cpu,onnx-dynamo-onnx2tf-tflite-fp32")
TARGETS = {"cold": 1.3, "warm": 1.5}  # harness wall / bare wall, from the issue
COLUMNS = ("bare cold", "harness cold", "bare warm", "harness warm")
# the table's rows: a label and the phase keys it sums, bare_pipeline.py's and the harness's names
ROWS = [("imports/startup", ("imports", "startup")), ("factory", ("factory",)),
        ("reference", ("reference",)), ("floors", ("floors",)), ("build", ("build", "prebuild")),
        ("load", ("load",)), ("run", ("run",)), ("compare", ("compare",))]
PYTEST_OK = (0, 1)  # 1: a check failed, which is the suite's finding, not the benchmark's


@dataclass
class Run:
    """One timed subprocess: its wall seconds and the seconds per phase it reported."""

    wall: float
    phases: dict[str, float]

    @property
    def other(self) -> float:
        return self.wall - sum(self.phases.values())


def child_environment() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE. tox does not pass it to the suite, and with
    it every process would recompile every module it imports (torch's thousands among them) instead
    of reading the cached bytecode: the runs would time the compiler."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str], log: Path, ok: Container[int] = (0,)) -> float:
    """Wall seconds of `command`, run from the repository root with its output into `log`."""
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, env=child_environment(), stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - started
    if code not in ok:
        raise SystemExit(f"{' '.join(command)} exited {code}; the end of {log}:\n"
                         f"{log.read_text(errors='replace')[-4000:]}")
    print(f"{log.stem}: {wall:.1f} s (log {log})", file=sys.stderr)
    return wall


def bare(args: argparse.Namespace, work: Path, reuse: bool) -> Run:
    """bare_pipeline.py on `work`: building everything (cold), or loading what is there (warm)."""
    name = "bare-warm" if reuse else "bare-cold"
    timings = work / f"{name}.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bare_pipeline.py"), "--models", args.models,
               "--formats", args.formats, "--work", str(work / "bare"), "--timings", str(timings)]
    wall = timed(command + (["--reuse"] if reuse else []), work / f"{name}.log")
    phases = json.loads(timings.read_text())
    del phases["total"]  # its own wall time; `other` is measured against the process's
    return Run(wall, phases)


def harness(args: argparse.Namespace, work: Path, name: str) -> tuple[Run, dict[str, Any]]:
    """`pytest suites/parity` with the store in `work`; the run and its report (parity.json)."""
    reports = work / f"reports-{name}"
    command = [sys.executable, "-m", "pytest", "suites/parity", "-q", "-p", "no:cacheprovider",
               "--models", args.models, "--formats", args.formats, "--store", str(work / "store"),
               "--report-dir", str(reports)] + (["-n", str(args.workers)] if args.workers else [])
    wall = timed(command, work / f"harness-{name}.log", PYTEST_OK)
    report = json.loads((reports / "parity.json").read_text())
    return Run(wall, harness_phases(report)), report


def harness_phases(report: Mapping[str, Any]) -> dict[str, float]:
    """Each check's phases and the session's, summed per key (none where the report has none)."""
    phases: dict[str, float] = defaultdict(float)
    session = report["session"].get("phases", {})
    for part in [check.get("phases", {}) for check in report["checks"]] + [session]:
        for key, seconds in part.items():
            phases[key] += seconds
    return dict(phases)


def rebuilt(report: Mapping[str, Any]) -> int:
    """How many artifacts the run built rather than found in the store."""
    return sum(bool(step["built_now"]) for check in report["checks"] for step in check.get("build", []))


def table(runs: Mapping[str, Run]) -> list[str]:
    """The markdown table: a row per phase (and per phase key no row names), other, total wall."""
    named = {key for _, keys in ROWS for key in keys}
    extra = sorted({key for run in runs.values() for key in run.phases} - named)
    lines = [f"| phase (s) | {' | '.join(COLUMNS)} |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for label, keys in ROWS + [(key, (key,)) for key in extra]:
        lines.append(f"| {label} | " + " | ".join(cell(runs[c], keys) for c in COLUMNS) + " |")
    lines.append("| other | " + " | ".join(f"{runs[c].other:.1f}" for c in COLUMNS) + " |")
    lines.append("| total wall | " + " | ".join(f"{runs[c].wall:.1f}" for c in COLUMNS) + " |")
    return lines


def cell(run: Run, keys: tuple[str, ...]) -> str:
    present = [run.phases[key] for key in keys if key in run.phases]
    return f"{sum(present):.1f}" if present else "-"


def ratios(runs: Mapping[str, Run]) -> dict[str, float]:
    return {temperature: runs[f"harness {temperature}"].wall / runs[f"bare {temperature}"].wall
            for temperature in TARGETS}


@contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    """`keep` (new or empty), or a temporary directory removed afterwards."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="harness-vs-bare-") as work:
            yield Path(work)
        return
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise SystemExit(f"--keep {keep}: not empty (the cold runs need an empty store and work directory)")
    yield keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help="comma-separated format ids or globs")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers for the harness runs")
    parser.add_argument("--keep", type=Path, help="keep the work directories (store, artifacts, logs) here")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    with work_directory(args.keep) as work:
        runs = {"bare cold": bare(args, work, reuse=False), "bare warm": bare(args, work, reuse=True)}
        runs["harness cold"], cold_report = harness(args, work, "cold")
        runs["harness warm"], warm_report = harness(args, work, "warm")
    print(f"models {args.models}; formats {args.formats}; xdist workers {args.workers}; "
          f"{len(cold_report['checks'])} checks in the harness report")
    print()
    print("\n".join(table(runs)))
    print()
    found = ratios(runs)
    for temperature, ratio in found.items():
        verdict = "met" if ratio <= TARGETS[temperature] else "missed"
        print(f"{temperature}: harness/bare {ratio:.2f}x (target <= {TARGETS[temperature]}x: {verdict})")
    again = rebuilt(warm_report)
    print(f"artifacts rebuilt by the warm harness run: {again}" + (" (it was not warm)" if again else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "models": args.models, "formats": args.formats, "workers": args.workers,
            "runs": {name: {**asdict(run), "other": run.other} for name, run in runs.items()},
            "ratios": found, "targets": TARGETS, "rebuilt_warm": again,
            "checks": len(cold_report["checks"])}, indent=1))


if __name__ == "__main__":
    main()
