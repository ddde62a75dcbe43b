"""The same conversions and runs as `pytest suites/parity`, without the harness: no pytest, no child
processes, no store, no comparison statistics or reports. The baseline for the harness's overhead.

    python benchmarks/bare_pipeline.py --models resnet18,digits_cnn
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelparity.formats import build_graph
from modelparity.formats.base import LoadContext
from modelparity.machine import machine_info
from modelparity.models import load_spec, resolve_reference, save_model_artifact
from modelparity.references import import_target

BUILTIN_OPSETS = [13, 17, 23]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small,digits_cnn,tiny_transformer")
    parser.add_argument("--opsets", default=",".join(map(str, BUILTIN_OPSETS)))
    args = parser.parse_args()
    started = time.perf_counter()
    graph = build_graph({"opsets": [int(o) for o in args.opsets.split(",")]})
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            reference = resolve_reference(name)
            spec = load_spec(reference)
            root = Path(work) / name
            root.mkdir()
            save_model_artifact(spec, reference, root)
            built: dict[str | None, Path] = {None: root}
            worst = 0.0
            for node in graph.nodes.values():
                source = built.get(node.parent)
                if source is None:
                    continue
                if node.build:
                    out = root / node.id
                    out.mkdir()
                    try:
                        import_target(node.build)(str(source), str(out), dict(node.params), str(root))
                    except Exception as error:  # the harness reports these; the bare run skips them
                        print(f"{name} {node.id}: {type(error).__name__}")
                        continue
                    source = out
                built[node.id] = source
                if node.load is None or (node.applies and node.applies(machine_info())):
                    continue
                runner = node.load(LoadContext(source, node.params, spec.input_names, spec.output_names))
                for batch in (1, 4):
                    inputs = spec.inputs_for({"batch": batch}, seed=batch)
                    with torch.no_grad():
                        expected = spec.module(*[torch.from_numpy(v) for v in inputs.values()])
                    got = runner.run(inputs)[spec.output_names[0]]
                    worst = max(worst, float(np.abs(got - expected.numpy()).max()))
            print(f"{name}: worst max abs {worst:.3g}")
    print(f"bare pipeline: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
