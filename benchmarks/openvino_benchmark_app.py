"""Does the harness time OpenVINO the way OpenVINO's own benchmark_app does?

Runs `pytest suites/latency` for one model's ONNX -> OpenVINO IR format at one batch, then
benchmark_app on the same IR file with the same settings (CPU, latency hint, the inference precision
the harness's runner reported, the same thread count, synchronous requests, the model left dynamic
and fed data of the same shape), and compares the two medians. Exits 1 when they differ by more than
--tolerance (default 10%).

    python benchmarks/openvino_benchmark_app.py --model resnet18 --batch 1
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def harness_median(model: str, fmt: str, batch: int, store: str, budget: float) -> dict:
    """The latency suite's own result for one format, read back from pytest-benchmark's JSON."""
    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch) / "latency.json"
        command = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "latency"), "--benchmark-only",
                   "--models", model, "--formats", fmt, "--latency-batches", str(batch),
                   "--latency-memory", "off", "--latency-budget", str(budget), "--store", store,
                   "--benchmark-json", str(result_file), "-p", "no:cacheprovider", "-q",
                   "--report-dir", scratch]
        subprocess.run(command, cwd=ROOT, check=True)
        benchmark = json.loads(result_file.read_text())["benchmarks"][0]
    return {"median_ms": benchmark["stats"]["median"] * 1000, "rounds": benchmark["stats"]["rounds"],
            **benchmark["extra_info"]}


def benchmark_app_median(xml: Path, shapes: str, precision: str, seconds: int) -> tuple[float, int, str]:
    """benchmark_app's median and the thread count it compiled with. (It refuses -nthreads with a
    performance hint, so the latency hint chooses the threads, as it does for the harness's runner;
    the caller checks that both chose the same.)"""
    executable = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    command = [executable, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
               "-infer_precision", PRECISIONS[precision], "-data_shape", shapes, "-t", str(seconds)]
    answer = subprocess.run(command, capture_output=True, text=True)
    if answer.returncode != 0:
        raise SystemExit(f"benchmark_app failed:\n{answer.stdout[-3000:]}{answer.stderr[-3000:]}")
    median = re.search(r"Latency:\s*\n.*?Median:\s*([\d.]+)\s*ms", answer.stdout, re.S)
    threads = re.search(r"INFERENCE_NUM_THREADS:\s*(\d+)", answer.stdout)
    if median is None or threads is None:
        raise SystemExit(f"benchmark_app printed no median latency or thread count:\n{answer.stdout[-3000:]}")
    return float(median.group(1)), int(threads.group(1)), " ".join(command)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--format", default="onnx-dynamo-ov-irfp32-cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--store", default=str(ROOT / ".store"))
    parser.add_argument("--seconds", type=int, default=15, help="benchmark_app -t, and the harness's budget")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()

    ours = harness_median(args.model, args.format, args.batch, args.store, float(args.seconds))
    artifact = Path(ours["artifact"])
    from modelparity.models import load_spec, resolve_reference

    spec = load_spec(resolve_reference(args.model))
    sizes = {spec.batch_axis: args.batch} if spec.batch_axis else {}
    inputs = spec.inputs_for(sizes, seed=0)
    shapes = ",".join(f"{name}[{','.join(map(str, value.shape))}]" for name, value in inputs.items())
    theirs, their_threads, command = benchmark_app_median(artifact / "model.xml", shapes, ours["precision"],
                                                          args.seconds)
    if their_threads != int(ours["threads"]):
        print(f"benchmark_app compiled with {their_threads} threads, the harness with {ours['threads']}")
        return 1
    ratio = ours["median_ms"] / theirs
    print(f"IR: {artifact / 'model.xml'}")
    print(f"harness (suites/latency, {ours['rounds']} rounds): median {ours['median_ms']:.3f} ms "
          f"(precision {ours['precision']}, threads {ours['threads']}, {ours['timed']})")
    print(f"benchmark_app: median {theirs:.3f} ms, threads {their_threads}  [{command}]")
    print(f"harness / benchmark_app = {ratio:.3f} (allowed 1 +- {args.tolerance:g})")
    return 0 if abs(ratio - 1) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
