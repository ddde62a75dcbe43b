"""What running a runtime's runners in a worker process costs (modelparity/runner_worker.py): load
and per-run time in process and isolated, per model and format, and the worker's resident memory.

    python benchmarks/isolation_cost.py --models digits_cnn,resnet18 --formats onnx-dynamo-ort

The README's "Artifact store and isolation" table comes from this script. Builds go through the
store (--store), so a warm store measures only loading and running.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from modelparity.formats import build_graph
from modelparity.harness import BuildRecord, Harness
from modelparity.machine import machine_info
from modelparity.models import resolve_reference
from modelparity.store import ArtifactStore
from modelparity.zoo import BUILTIN_MODELS


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_runs(runner, inputs, repeat: int) -> float:
    """Median seconds of one run()."""
    runner.run(inputs)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        runner.run(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="digits_cnn,tiny_transformer,resnet18")
    parser.add_argument("--formats", default="onnx-dynamo-ort,onnx-dynamo-fp16-ort")
    parser.add_argument("--store", default=".store")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    harness = Harness(build_graph({"opsets": [13, 17, 23]}), ArtifactStore(Path(args.store)), 600)
    print(f"cpu {machine_info()['cpu_model']}; batch {args.batch}; median of {args.repeat} runs")
    print(f"{'model':<18}{'format':<24}{'load in':>9}{'load iso':>9}{'run in':>10}{'run iso':>10}"
          f"{'+/run':>9}")
    for name in args.models.split(","):
        model = harness.model(resolve_reference(BUILTIN_MODELS.get(name, name)))
        spec = model.spec
        inputs = spec.inputs_for({spec.batch_axis: args.batch} if spec.batch_axis else {}, seed=0)
        for format_id in args.formats.split(","):
            artifact = harness.artifact(model, format_id, BuildRecord())
            harness.isolate_runtimes = frozenset()
            in_process, load_in = harness.runner(model, format_id, artifact)
            harness.isolate_runtimes = frozenset({harness.runtime_family(format_id) or ""})
            isolated, load_iso = harness.runner(model, format_id, artifact)
            run_in = timed_runs(in_process, inputs, args.repeat)
            run_iso = timed_runs(isolated, inputs, args.repeat)
            print(f"{spec.name:<18}{format_id:<24}{load_in:>8.3f}s{load_iso:>8.3f}s"
                  f"{run_in * 1e3:>8.2f}ms{run_iso * 1e3:>8.2f}ms{(run_iso - run_in) * 1e3:>7.2f}ms")
    for family, pid in harness.worker_pids().items():
        print(f"{family} worker: {resident_mib(pid):.0f} MiB resident")
    harness.close()


if __name__ == "__main__":
    main()
