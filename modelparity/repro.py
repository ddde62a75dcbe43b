"""Re-run one parity check on the inputs it saved: `python -m modelparity.repro --model REF --format ID
--inputs FILE.npz`, the command every parity failure message prints.

It loads the same model, takes the format's artifact from the same store (building it if it is
missing), runs it on exactly the saved inputs, compares with torch eager under the same tolerance
layers (the model spec's, then [tool.modelparity] tolerance in ./pyproject.toml) and the same
noise-floor rule, prints the comparison, and saves the format's outputs next to the inputs. Exit
status 0 when the check passes, 1 when it fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def command(model_reference: str, format_id: str, inputs: Path, store: Path, recipe: dict) -> str:
    """The shell command that reproduces a check (what failure messages print)."""
    words = [sys.executable if sys.executable else "python", "-m", "modelparity.repro",
             "--model", model_reference, "--format", format_id, "--inputs", str(inputs),
             "--store", str(store)]
    opsets = recipe.get("options", {}).get("opsets")
    if opsets:
        words += ["--opsets", ",".join(map(str, opsets))]
    for plugin in recipe.get("plugins", []):
        words += ["--format-plugin", plugin]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelparity.repro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model reference (file.py:FACTORY or module:FACTORY)")
    parser.add_argument("--format", required=True, help="format id, e.g. onnx-dynamo-ort")
    parser.add_argument("--inputs", required=True, type=Path, help=".npz the check saved")
    parser.add_argument("--store", type=Path, default=Path(".store"), help="artifact store (default .store)")
    parser.add_argument("--opsets", default="", help="opsets of the explicit ONNX exports, e.g. 13,17,23")
    parser.add_argument("--format-plugin", action="append", default=[], help="extra formats module")
    parser.add_argument("--build-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    from modelparity.checks.parity import compare_with_reference
    from modelparity.checks.tolerance import parse_overrides
    from modelparity.formats import build_graph
    from modelparity.harness import BuildRecord, Harness
    from modelparity.store import ArtifactStore, StoredBuildError

    if not args.inputs.is_file():
        parser.error(f"{args.inputs}: no such file; the failure message names the .npz its check saved")
    opsets = [int(o) for o in args.opsets.split(",") if o.strip()]
    graph = build_graph({"opsets": opsets}, args.format_plugin)
    if args.format not in graph.nodes:
        parser.error(f"--format {args.format}: unknown; known: {', '.join(sorted(graph.nodes))}")
    harness = Harness(graph, ArtifactStore(args.store), args.build_timeout)
    try:
        model = harness.model(args.model)
        with np.load(args.inputs) as saved:
            inputs = {name: saved[name] for name in model.spec.input_names}
        batch = next(iter(inputs.values())).shape[model.spec.batch_dim(model.spec.input_names[0]) or 0]
        try:
            artifact = harness.artifact(model, args.format, BuildRecord())
        except StoredBuildError as error:
            print(f"conversion failed for {args.format}: {error}")
            return 1
        runner, _ = harness.runner(model, args.format, artifact)
        actual = runner.run(inputs)
        outputs = args.inputs.with_name(f"{args.inputs.stem}.{args.format}.outputs.npz")
        np.savez(outputs, **actual)
        pyproject = Path("pyproject.toml")
        table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("modelparity", {}) \
            if pyproject.is_file() else {}
        overrides = parse_overrides(table.get("tolerance", []), str(pyproject))
        comparison = compare_with_reference(harness, model, args.format, inputs, (batch, "repro"), actual,
                                            overrides)
        print(comparison.message())
        print(f"{args.format} outputs saved to {outputs}")
        return 0 if comparison.passed else 1
    finally:
        harness.close()  # its conversion and runtime worker processes


if __name__ == "__main__":
    sys.exit(main())
