"""The litert-torch worker: runs with the litert-torch overlay's Python (modelparity/litert_env.py).

litert-torch 0.10.0 needs typing-extensions < 4.13 (through xdsl), which the main environment cannot
import; the overlay sees the main environment's packages behind its own, so modelparity, torch and
torchao import here as they do there. The conversion runs here; the .tflite it writes is run in the
main environment with LiteRT, like every other .tflite.

Protocol (modelparity/worker.py): one JSON request per line on stdin, one JSON answer per line on
the process's original stdout; everything the libraries print goes to stderr, which the caller logs.
Operations:
  convert   {"model": dir, "out": file, "quantization": null | "pt2e-drq", "dynamic": bool}
            litert_torch.convert(module.eval(), export inputs, dynamic_shapes=the spec's axes, or
            none: every size the export's) and .export(out); "pt2e-drq" first quantises with the
            PT2E recipe of litert-torch's converter README (dynamic-range INT8: per-channel
            symmetric int8 weights, activations quantised at run time).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _pt2e_dynamic_int8(module: Any, sample_args: tuple, dynamic: tuple | None) -> tuple[Any, Any]:
    """The module quantised as litert-torch's README shows (prepare, one calibration call, convert),
    and the QuantConfig that tells the converter so."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    graph = torch.export.export(module, sample_args, dynamic_shapes=dynamic).module()
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    graph(*sample_args)  # populates the per-channel weight observers
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer)


def convert(model: str, out: str, quantization: str | None, dynamic: bool) -> dict[str, Any]:
    """Convert the root artifact's module on its export inputs, with the spec's dynamic axes (as
    torch.export takes them) when `dynamic`; the shapes of its torch outputs come back so the caller
    can pair them with the file's."""
    import litert_torch
    import torch

    from modelparity.formats.onnx_export import dynamic_shapes
    from modelparity.formats.torchscript import as_named_outputs
    from modelparity.models import ModelArtifact

    artifact = ModelArtifact(Path(model))
    module = artifact.load_module().eval()
    sample_args = tuple(torch.from_numpy(v) for v in artifact.export_inputs().values())
    with torch.no_grad():
        outputs = as_named_outputs(module(*sample_args), artifact.meta["outputs"])
    meta = artifact.meta
    axes = dynamic_shapes(meta, {t: {int(d): a for d, a in dims.items()}
                                 for t, dims in meta["dynamic_axes"].items()}) if dynamic else None
    quant_config = None
    if quantization == "pt2e-drq":
        module, quant_config = _pt2e_dynamic_int8(module, sample_args, axes)
    elif quantization is not None:
        raise ValueError(f"unknown quantization {quantization!r}")
    litert_torch.convert(module, sample_args, quant_config=quant_config,
                         dynamic_shapes=axes).export(out)
    return {"litert_torch": litert_torch.__version__, "torch": torch.__version__,
            "output_shapes": {name: list(value.shape) for name, value in outputs.items()}}


OPERATIONS = {"convert": convert}


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library output must not corrupt the protocol
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        operation = request.pop("op")
        try:
            answer: dict[str, Any] = {"ok": True, "result": OPERATIONS[operation](**request)}
        except Exception as error:  # every failure goes back to the caller as data
            traceback.print_exc()
            answer = {"ok": False, "error": {"type": type(error).__name__, "message": str(error),
                                             "traceback": traceback.format_exc(limit=-4)}}
        sys.stderr.flush()
        protocol.write(json.dumps(answer, default=str) + "\n")


if __name__ == "__main__":
    main()
