"""Cold and warm `pytest suites/parity` against the bare pipeline, in wall-clock seconds.

    python benchmarks/cold_warm.py [--models resnet18,digits_cnn]

Cold: an empty artifact store. Warm: the same store again (nothing may be rebuilt; checked). Bare:
benchmarks/bare_pipeline.py, the same conversions and runs without the harness. bf16 formats are left
out of the bare run where the CPU lacks BF16, as the suite skips them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small,digits_cnn,tiny_transformer")
    parser.add_argument("--workers", default="0", help="pytest-xdist workers for the suite runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        suite = [sys.executable, "-m", "pytest", "suites/parity", "-q", "-p", "no:cacheprovider",
                 "--models", args.models, "--store", f"{work}/store", "--report-dir", f"{work}/reports"]
        if args.workers != "0":
            suite += ["-n", args.workers]
        cold = timed(suite)
        warm = timed(suite)
        report = json.loads(Path(work, "reports", "parity.json").read_text())
        rebuilt = sum(s["built_now"] for c in report["checks"] for s in c.get("build", []))
        checks = len(report["checks"])
    bare = timed([sys.executable, str(ROOT / "benchmarks" / "bare_pipeline.py"), "--models", args.models])
    print(f"models {args.models}; {checks} checks; xdist workers {args.workers}")
    print(f"cold suite   {cold:7.1f} s")
    print(f"warm suite   {warm:7.1f} s   (artifacts rebuilt: {rebuilt})")
    print(f"bare script  {bare:7.1f} s   (converts and runs the same formats, no harness)")


if __name__ == "__main__":
    main()
