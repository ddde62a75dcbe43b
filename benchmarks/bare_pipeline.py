"""The same conversions and runs as `pytest suites/parity`, without the harness: no pytest, no child
processes, no store, no comparison statistics or reports. The baseline for the harness's overhead
(benchmarks/harness_vs_bare.py runs it cold and warm).

    python benchmarks/bare_pipeline.py --models resnet18 --formats 'onnx-dynamo-*ort,torchscript'
    python benchmarks/bare_pipeline.py --models digits_cnn --work /tmp/bare
    python benchmarks/bare_pipeline.py --models digits_cnn --work /tmp/bare --reuse

For each model: the factory, the root artifact, every node on the chain of a selected format (the
builders the harness runs, in this process, parents before children), each runner loaded and run
at batches 1 and 4, and torch eager on the same inputs (once per batch). A builder that raises, and
a runner that fails to load or run, is printed and skipped; a format that does not apply to this
machine (e.g. bf16 on a CPU without it) is not loaded. --reuse builds nothing: it loads what the
--work directory holds from an earlier run.

The last line of stdout is the seconds per phase as JSON (also written to --timings FILE): imports
(torch, torch._dynamo and the selected formats' required modules), factory (load_spec), build (the root
artifact and the converters), load, run (the formats' runners), reference (torch eager) and total.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from modelparity.formats import FormatGraph, build_graph
from modelparity.formats.base import Format, LoadContext, Requirement, Runner
from modelparity.formats.torchscript import as_named_outputs
from modelparity.machine import machine_info
from modelparity.models import load_spec, resolve_reference, save_model_artifact
from modelparity.references import import_target
from modelparity.spec import ModelSpec

BUILTIN_OPSETS = [13, 17, 23]
BATCHES = (1, 4)  # the parity suite's batches
T = TypeVar("T")
PHASES = ("imports", "factory", "build", "load", "run", "reference")


class Phases:
    """Seconds spent per phase."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


def selected_nodes(graph: FormatGraph, patterns: list[str]) -> list[Format]:
    """Every node on the chain of a node whose id matches a pattern (an id or a glob), in graph
    order: parents before children."""
    wanted: set[str] = set()
    for pattern in patterns:
        matched = [i for i in graph.nodes if fnmatch.fnmatchcase(i, pattern)]
        if not matched:
            raise SystemExit(f"--formats: {pattern!r} matches no format id")
        wanted |= {node.id for i in matched for node in graph.chain(i)}
    return [node for node in graph.nodes.values() if node.id in wanted]


def import_modules(nodes: list[Format]) -> None:
    """torch and every Python module the nodes require, so that no later phase pays for an import.

    torch._dynamo (torchvision's models and the dynamo exporter import it) comes before them: it loads
    triton, which crashes the process (SIGSEGV) when TensorFlow is already loaded. The harness never
    has both in one process; this script converts and runs everything in its own.
    """
    modules = dict.fromkeys(["torch", "torch._dynamo"] + [r.module for n in nodes for r in n.requires
                                                          if isinstance(r, Requirement)])
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:  # its formats' builders or loaders say so again, and are skipped
            print(f"import {module}: {error}")


def report(label: str, error: Exception) -> None:
    print(f"{label}: {type(error).__name__}: {str(error)[:200]}")


def attempt(label: str, action: Callable[[], T]) -> T | None:
    """`action()`, or None after printing what it raised."""
    try:
        return action()
    except Exception as error:  # the harness reports these; the bare run skips them
        report(label, error)
        return None


def eager(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        result = spec.module(*[torch.from_numpy(v) for v in inputs.values()])
    return as_named_outputs(result, spec.output_names)


def batch_inputs(spec: ModelSpec) -> dict[int, dict[str, np.ndarray]]:
    """The inputs at each of BATCHES the model's batch axis allows (one set for a model without one)."""
    if spec.batch_axis is None:
        return {1: spec.inputs_for({}, seed=1)}
    largest = spec.axis_ranges[spec.batch_axis].max
    return {b: spec.inputs_for({spec.batch_axis: b}, seed=b) for b in BATCHES if b <= largest}


def max_difference(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> float:
    """The largest absolute difference over the outputs (inf for one missing or of another shape)."""
    worst = 0.0
    for name, value in want.items():
        if name not in got or np.shape(got[name]) != value.shape:
            return math.inf
        worst = max(worst, float(np.abs(np.asarray(got[name], np.float64) - value).max()))
    return worst


def build(node: Format, source: Path, root: Path, reuse: bool, label: str) -> Path | None:
    """The node's artifact directory, built from `source` (with `reuse`: the one already there); None
    when its builder raised (its partial output is removed) or, with `reuse`, there is none."""
    assert node.build is not None
    out = root / node.id
    if reuse:
        if not out.is_dir():
            print(f"{label}: not built in {root}")
            return None
        return out
    out.mkdir()
    try:
        import_target(node.build)(str(source), str(out), dict(node.params), str(root))
    except Exception as error:  # the harness reports these; the bare run skips them
        report(label, error)
        shutil.rmtree(out)
        return None
    return out


def run_format(label: str, runner: Runner, feeds: Mapping[int, Mapping[str, np.ndarray]],
               expected: Mapping[int, Mapping[str, np.ndarray]], phases: Phases) -> float:
    """The runner on each batch's inputs; the worst difference from torch eager."""
    worst = 0.0
    for batch, inputs in feeds.items():
        with phases.timing("run"):
            got = attempt(f"{label} b{batch}", partial(runner.run, inputs))
        if got is not None:
            worst = max(worst, max_difference(got, expected[batch]))
    return worst


def model_root(name: str, work: Path, reuse: bool) -> Path:
    """The model's directory under `work`: there already with `reuse`, new otherwise."""
    root = work / name
    if reuse and not root.is_dir():
        raise SystemExit(f"--reuse: {root} does not exist: run once without --reuse first")
    if not reuse and root.exists():
        raise SystemExit(f"{root} exists: delete it, or give --reuse to load what it holds")
    return root


def run_model(name: str, nodes: list[Format], work: Path, reuse: bool, phases: Phases) -> None:
    """Build (unless `reuse`), load and run every node for one model; prints its worst difference."""
    reference = resolve_reference(name)
    root = model_root(name, work, reuse)
    with phases.timing("factory"):
        spec = load_spec(reference)
    if not reuse:
        with phases.timing("build"):
            root.mkdir(parents=True)
            save_model_artifact(spec, reference, root)
    feeds = batch_inputs(spec)
    with phases.timing("reference"):
        expected = {batch: eager(spec, inputs) for batch, inputs in feeds.items()}
    built: dict[str | None, Path] = {None: root}
    worst = 0.0
    for node in nodes:
        label = f"{name} {node.id}"
        source = built.get(node.parent)
        if source is not None and node.build:
            with phases.timing("build"):
                source = build(node, source, root, reuse, label)
        if source is None:
            continue
        built[node.id] = source
        reason = node.applies(machine_info()) if node.applies else None
        if reason:
            print(f"{label}: does not apply here: {reason}")
        if node.load is None or reason:
            continue
        with phases.timing("load"):
            runner = attempt(label, partial(node.load, LoadContext(source, node.params, spec.input_names,
                                                                   spec.output_names, root)))
        if runner is not None:
            worst = max(worst, run_format(label, runner, feeds, expected, phases))
    print(f"{name}: worst max abs {worst:.3g}")


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small,digits_cnn,tiny_transformer")
    parser.add_argument("--formats", default="*", help="comma-separated format ids or globs")
    parser.add_argument("--opsets", default=",".join(map(str, BUILTIN_OPSETS)))
    parser.add_argument("--work", type=Path, help="where the artifacts go (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="build nothing: load what --work holds")
    parser.add_argument("--timings", type=Path, help="also write the phases' JSON here")
    args = parser.parse_args()
    if args.reuse and args.work is None:
        parser.error("--reuse needs --work")
    graph = build_graph({"opsets": [int(o) for o in args.opsets.split(",")]})
    nodes = selected_nodes(graph, args.formats.split(","))
    phases = Phases()
    with phases.timing("imports"):
        import_modules(nodes)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            run_model(name, nodes, args.work or Path(scratch), args.reuse, phases)
    timings = {**phases.seconds, "total": time.perf_counter() - started}
    if args.timings:
        args.timings.write_text(json.dumps(timings))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
