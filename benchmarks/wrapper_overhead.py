"""How much does the harness's timed call add to a bare runtime call?

suites/latency times `runner.timed_call(inputs)`: a callable prepared outside the timed region. Here,
for each format, the same loaded runtime object (the same session, compiled model, interpreter or
module) is called in two ways on the same prepared inputs: through that callable, and with the
runtime's own API written inline in the timing loop. Blocks of calls alternate between the two so
that drift and noise hit both alike; the overhead is the median over blocks of the ratio of their
medians.
Exits 1 when any format's overhead exceeds --limit (default 5%).

    python benchmarks/wrapper_overhead.py --models digits_cnn,resnet18
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelparity.formats import build_graph  # noqa: E402
from modelparity.formats.onnx2tf import SavedModelRunner  # noqa: E402
from modelparity.formats.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from modelparity.formats.openvino import OpenVinoRunner  # noqa: E402
from modelparity.formats.tflite import TFLiteRunner  # noqa: E402
from modelparity.formats.torchscript import TorchScriptRunner  # noqa: E402
from modelparity.harness import BuildRecord, Harness  # noqa: E402
from modelparity.models import resolve_reference  # noqa: E402
from modelparity.store import ArtifactStore  # noqa: E402

FORMATS = ("onnx-dynamo-ort", "onnx-dynamo-ov-irfp32-cpu", "onnx-dynamo-onnx2tf-tflite-fp32",
           "onnx-dynamo-onnx2tf-tf", "torchscript", "eager")
Clock = Callable[[], float]


def bare_loop(runner: Any, inputs: dict, calls: int) -> list[float]:
    """The runtime's own call, written inline: no callable of the harness in between."""
    clock, times = time.perf_counter, []
    if isinstance(runner, OnnxRuntimeRunner):
        session, names = runner._session, runner._outputs
        for _ in range(calls):
            start = clock()
            session.run(names, inputs)
            times.append(clock() - start)
    elif isinstance(runner, OpenVinoRunner):
        request = runner._request
        feeds = {name: inputs[name] for name in runner._inputs}
        for _ in range(calls):
            start = clock()
            request.infer(feeds, share_inputs=True, share_outputs=True)
            times.append(clock() - start)
    elif isinstance(runner, TFLiteRunner):
        interpreter = runner._interpreter
        feeds = runner._prepare(inputs)
        slots = [(runner._inputs[name]["index"], value) for name, value in feeds.items()]
        outputs = [detail["index"] for detail in runner._outputs.values()]
        for _ in range(calls):
            start = clock()
            for index, value in slots:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            [interpreter.get_tensor(index) for index in outputs]
            times.append(clock() - start)
    elif isinstance(runner, TorchScriptRunner):
        import torch

        module, tensors = runner._module, [torch.from_numpy(v) for v in inputs.values()]
        for _ in range(calls):
            start = clock()
            with torch.no_grad():
                module(*tensors)
            times.append(clock() - start)
    elif isinstance(runner, SavedModelRunner):
        import tensorflow as tf

        signature = runner._signature
        feeds = {k: tf.constant(v) for k, v in runner._layout.to_artifact(inputs).items()}
        for _ in range(calls):
            start = clock()
            signature(**feeds)
            times.append(clock() - start)
    else:
        raise SystemExit(f"no bare call written for {type(runner).__name__}")
    return times


def harness_loop(call: Callable[[], Any], calls: int) -> list[float]:
    clock, times = time.perf_counter, []
    for _ in range(calls):
        start = clock()
        call()
        times.append(clock() - start)
    return times


def compare(runner: Any, inputs: dict, blocks: int, seconds: float) -> dict[str, float]:
    """Median over blocks of (harness block median / bare block median); blocks alternate which
    path goes first, so that drift within a pair cancels."""
    call = runner.timed_call(inputs)
    for _ in range(20):  # warm both paths
        call()
    per_call = statistics.median(harness_loop(call, 5))
    calls = max(5, int(seconds / blocks / 2 / max(per_call, 1e-7)))
    ratios, harness, bare = [], [], []
    for block in range(blocks):
        if block % 2:
            b = statistics.median(bare_loop(runner, inputs, calls))
            h = statistics.median(harness_loop(call, calls))
        else:
            h = statistics.median(harness_loop(call, calls))
            b = statistics.median(bare_loop(runner, inputs, calls))
        harness.append(h)
        bare.append(b)
        ratios.append(h / b)
    return {"harness_us": statistics.median(harness) * 1e6, "bare_us": statistics.median(bare) * 1e6,
            "overhead": statistics.median(ratios) - 1, "calls": calls * blocks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits_cnn,resnet18")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--store", default=str(ROOT / ".store"))
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per format")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--limit", type=float, default=0.05)
    args = parser.parse_args()

    graph = build_graph({"opsets": [17]})
    harness = Harness(graph, ArtifactStore(Path(args.store)), build_timeout=900)
    worst = 0.0
    print(f"{'model':<20}{'format':<36}{'bare us':>12}{'harness us':>12}{'overhead':>10}{'calls':>8}")
    for name in args.models.split(","):
        model = harness.model(resolve_reference(name))
        spec = model.spec
        inputs = spec.inputs_for({spec.batch_axis: args.batch} if spec.batch_axis else {}, seed=0)
        for fmt in args.formats.split(","):
            artifact = harness.artifact(model, fmt, BuildRecord())
            runner, _ = harness.runner(model, fmt, artifact, in_process=True)
            result = compare(runner, inputs, args.blocks, args.seconds)
            worst = max(worst, result["overhead"])
            print(f"{name:<20}{fmt:<36}{result['bare_us']:>12.1f}{result['harness_us']:>12.1f}"
                  f"{result['overhead']:>+10.2%}{result['calls']:>8}")
    harness.close()
    print(f"worst overhead {worst:+.2%} (limit {args.limit:.0%})")
    return 0 if worst <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
