"""Load model specs from references, and save the model as the root artifact every format starts from.

The root artifact holds the pickled module, the inputs used for export, and the spec's names and
axes as JSON, so a conversion in a child process sees exactly the module the reference ran on,
without calling the factory again (digits_cnn trains; a user's factory may be slow or stateful).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.checks.compare import class_axes
from modelparity.references import BadReference, import_module_of, import_target
from modelparity.spec import AxisRange, ModelSpec, SpecError, validate
from modelparity.zoo import BUILTIN_MODELS


def resolve_reference(name_or_reference: str) -> str:
    """A built-in model's name, or a reference, as a reference."""
    if name_or_reference in BUILTIN_MODELS:
        return BUILTIN_MODELS[name_or_reference]
    if ":" not in name_or_reference:
        raise SpecError(f"unknown model {name_or_reference!r}: built-in models are "
                        f"{sorted(BUILTIN_MODELS)}; for your own, give 'path/to/file.py:FUNCTION'")
    return name_or_reference


def load_spec(reference: str) -> ModelSpec:
    """Call the factory a reference names and validate what it returns."""
    try:
        factory = import_target(reference)
    except BadReference as error:
        raise SpecError(f"--model {reference}: {error}") from error
    try:
        spec = factory()
    except Exception as error:
        raise SpecError(f"--model {reference}: the factory raised {type(error).__name__}: "
                        f"{error}") from error
    return validate(spec, reference)


def model_identity(spec: ModelSpec, reference: str) -> dict[str, Any]:
    """What the model's artifacts depend on: weights, code, reference, export inputs."""
    import torch

    weights = hashlib.sha256()
    for name, tensor in spec.module.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    code = hashlib.sha256()
    sources = {_source_file(type(m)) for m in spec.module.modules()}
    sources |= {_source_file(getattr(op, f)) for op in spec.custom_ops  # kernels and mappings
                for f in ("onnx_schema", "legacy_symbolic", "dynamo_translation", "onnxruntime_library")}
    for source in sorted(sources - {None}):
        code.update(Path(source).read_bytes())
    return {"reference": reference, "name": spec.name, "weights": weights.hexdigest()[:24],
            "code": code.hexdigest()[:24], "class": type(spec.module).__qualname__,
            "torch": torch.__version__, "axes": _axes_json(spec)}


def _source_file(definition: Any) -> str | None:
    try:
        return inspect.getsourcefile(definition)
    except TypeError:
        return None


def _axes_json(spec: ModelSpec) -> dict[str, Any]:
    axes: dict[str, Any] = {
        "name": spec.name,
        "classifier_outputs": class_axes(spec.classifier_outputs),
        "preprocess": _qualname(spec.preprocess),
        "inputs": spec.input_names,
        "outputs": spec.output_names,
        "dynamic_axes": {t: {str(d): a for d, a in dims.items()} for t, dims in spec.dynamic_axes.items()},
        "axis_ranges": {a: [r.min, r.max, r.multiple_of] for a, r in spec.axis_ranges.items()},
    }
    if spec.custom_ops:  # only then, so that other models' artifact keys stay what they were
        axes["custom_ops"] = [{"torch": op.torch_op, "onnx": op.onnx_op} for op in spec.custom_ops]
    return axes


def _qualname(function: Any) -> str | bool | None:
    """How the artifact records the spec's pre-processing: None (none), its qualified name (a
    function the spec's module defines, re-importable), or False (a lambda or a function from
    elsewhere: a service then calls the spec's factory to get it)."""
    if function is None:
        return None
    name = getattr(function, "__qualname__", "<")
    return False if "<" in name else name


def save_model_artifact(spec: ModelSpec, reference: str, directory: Path) -> dict[str, Any]:
    """Write the root artifact; returns its info for the manifest."""
    import torch

    torch.save(spec.module, directory / "module.pt")
    export_inputs = spec.inputs_for(spec.export_sizes(), seed=0)
    np.savez(directory / "export_inputs.npz", **export_inputs)
    np.savez(directory / "calibration_inputs.npz", **calibration_inputs(spec))
    if spec.custom_ops:
        with open(directory / "custom_ops.pkl", "wb") as file:
            pickle.dump(tuple(spec.custom_ops), file)
    (directory / "spec.json").write_text(json.dumps({"reference": reference, **_axes_json(spec)}))
    return {"export_shapes": {k: list(v.shape) for k, v in export_inputs.items()}}


CALIBRATION_SEED = 7919
CALIBRATION_BATCH = 16


def calibration_inputs(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Inputs for quantisation calibration: the spec's calibration set, else a batch drawn like the
    check inputs from its own seed."""
    if spec.calibration is not None:
        return {name: np.ascontiguousarray(value) for name, value in spec.calibration().items()}
    sizes = spec.export_sizes()
    if spec.batch_axis is not None:
        sizes[spec.batch_axis] = min(CALIBRATION_BATCH, spec.axis_ranges[spec.batch_axis].max)
    return spec.inputs_for(sizes, seed=CALIBRATION_SEED)


@dataclass(frozen=True)
class ModelArtifact:
    """The root artifact as a converter sees it (in a child process)."""

    path: Path

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "spec.json").read_text())

    def load_module(self) -> Any:
        import torch

        import_module_of(self.meta["reference"])  # the classes the pickle refers to
        module = torch.load(self.path / "module.pt", weights_only=False)
        return module.eval()

    def interface(self) -> ModelSpec:
        """The spec's declared interface (names, example inputs, axes, classifier outputs, image
        pre-processing) without calling its factory: what a service needs, without re-training or
        re-building the module. Falls back to the factory where the pre-processing is not a
        module-level function of the spec's module."""
        meta = self.meta
        if meta.get("preprocess", False) is False:  # not recorded, or not importable by name
            return load_spec(meta["reference"])
        preprocess = None
        if meta["preprocess"]:
            preprocess = functools.reduce(getattr, meta["preprocess"].split("."),
                                          import_module_of(meta["reference"]))
        return ModelSpec(
            name=meta["name"], module=None, example_inputs=self.export_inputs(),
            output_names=meta["outputs"],
            dynamic_axes={t: {int(d): a for d, a in dims.items()}
                          for t, dims in meta["dynamic_axes"].items()},
            axis_ranges={a: AxisRange(lo, hi, step) for a, (lo, hi, step) in meta["axis_ranges"].items()},
            classifier_outputs=class_axes(meta["classifier_outputs"]), preprocess=preprocess)

    def custom_ops(self) -> tuple[Any, ...]:
        """The spec's custom operators (modelparity.custom_ops.CustomOp), with the spec's module
        imported: that registers the torch operators a TorchScript file or the pickle refers to."""
        if not self.meta.get("custom_ops"):
            return ()
        import_module_of(self.meta["reference"])
        with open(self.path / "custom_ops.pkl", "rb") as file:
            return tuple(pickle.load(file))

    def export_inputs(self) -> dict[str, np.ndarray]:
        return self._arrays("export_inputs.npz")

    def calibration_inputs(self) -> dict[str, np.ndarray]:
        return self._arrays("calibration_inputs.npz")

    def calibration_samples(self) -> list[dict[str, np.ndarray]]:
        """The calibration inputs one sample (a batch of one) at a time, as quantisers take them."""
        calibration = self.calibration_inputs()
        rows = len(next(iter(calibration.values())))
        return [{name: value[row:row + 1] for name, value in calibration.items()} for row in range(rows)]

    def _arrays(self, file: str) -> dict[str, np.ndarray]:
        with np.load(self.path / file) as data:
            return {name: data[name] for name in self.meta["inputs"]}
