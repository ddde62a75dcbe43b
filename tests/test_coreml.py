"""Core ML from torch.export: both precisions convert and their files pass the runner's spec check;
a file whose interface differs from the spec (a frozen dynamic axis, a renamed or extra tensor, the
wrong compute precision) fails it, naming the file, the tensor and the difference; off macOS the
runner does not predict and says so (NotApplicable)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelparity import ModelSpec
from modelparity.formats import coreml, torch_export
from modelparity.formats.base import LoadContext, NotApplicable
from modelparity.models import ModelArtifact, save_model_artifact
from tests.conftest import TINY
from tests.models import tiny_model

# find_spec, not importorskip: importing coremltools outside coreml.import_coremltools loads TensorFlow
pytestmark = [pytest.mark.skipif(coreml.COREMLTOOLS.problem() is not None,
                                 reason=str(coreml.COREMLTOOLS.problem())),
              # ct.convert leaves its weights' TemporaryDirectory to the garbage collector
              pytest.mark.filterwarnings("ignore:Implicitly cleaning up <TemporaryDirectory:ResourceWarning")]


class StaticNet(nn.Module):
    """Two convolutions and a pooled head, every dim fixed (no dynamic axes)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3))
        self.head = nn.Linear(6, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).mean((2, 3)))


def build_static() -> ModelSpec:
    torch.manual_seed(0)
    pixels = np.random.default_rng(1).standard_normal((1, 3, 10, 12)).astype(np.float32)
    return ModelSpec(name="static_net", module=StaticNet().eval(), example_inputs={"pixels": pixels},
                     output_names=["scores"], batch_axis=None)


def root_artifact(directory: Path, spec: ModelSpec, reference: str) -> Path:
    directory.mkdir()
    save_model_artifact(spec, reference, directory)
    return directory


def convert(model: Path, export: Path, out: Path, precision: str) -> Path:
    out.mkdir()
    coreml.convert(str(export), str(out), {"precision": precision}, str(model))
    return out


def runner(model: Path, artifact: Path, precision: str) -> coreml.CoreMLRunner:
    meta = ModelArtifact(model).meta
    return coreml.CoreMLRunner(LoadContext(artifact, {"precision": precision}, meta["inputs"],
                                           meta["outputs"], model))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model (dynamic batch 1..8), its torch.export and both Core ML files."""
    root = tmp_path_factory.mktemp("coreml-tiny")
    model = root_artifact(root / "model", tiny_model.build(), f"{TINY}:build")
    export = root / "export"
    export.mkdir()
    torch_export.export(str(model), str(export), {}, str(model))
    return {"model": model, "export": export,
            **{p: convert(model, export, root / p, p) for p in ("fp32", "fp16")}}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_both_precisions_pass_the_spec_check_with_a_flexible_batch(tiny, precision):
    checked = runner(tiny["model"], tiny[precision], precision)
    assert checked.declared_shapes() == {"image": [None, 3, 16, 16]}
    facts = checked.facts
    assert facts["inputs"]["image"]["flexible"] == {0: [1, 8]} and list(facts["outputs"]) == ["logits"]
    assert facts["deployment_target"] == "iOS15" and facts["outputs"]["logits"]["dtype"] == "FLOAT32"
    assert ("FLOAT16" in facts["ops_by_precision"]) == (precision == "fp16")
    if sys.platform != "darwin":
        assert facts["runtime"].endswith("(spec only: prediction needs macOS)")


def test_a_static_model_declares_every_dim_fixed(tmp_path):
    model = root_artifact(tmp_path / "model", build_static(), f"{__name__}:build_static")
    export = tmp_path / "export"
    export.mkdir()
    torch_export.export(str(model), str(export), {}, str(model))
    checked = runner(model, convert(model, export, tmp_path / "fp32", "fp32"), "fp32")
    assert checked.declared_shapes() == {"pixels": [1, 3, 10, 12]}


def test_a_frozen_dynamic_axis_fails_naming_the_axis(tiny, tmp_path):
    """A file converted from an export without dynamic shapes: batch is fixed at the export's 2."""
    module = ModelArtifact(tiny["model"]).load_module()
    inputs = tuple(torch.from_numpy(v) for v in ModelArtifact(tiny["model"]).export_inputs().values())
    export = tmp_path / "export"
    export.mkdir()
    torch.export.save(torch.export.export(module, inputs), str(export / torch_export.PROGRAM))
    frozen = convert(tiny["model"], export, tmp_path / "fp32", "fp32")
    with pytest.raises(ValueError, match=r"model\.mlpackage: input 'image': dim 0 \(axis 'batch', "
                                         r"declared 1\.\.8\) is frozen in the file"):
        runner(tiny["model"], frozen, "fp32")


def edited_copy(source: Path, out: Path, edit) -> Path:
    """The package's spec changed by `edit` and saved back, with the source's weights."""
    ct = coreml.import_coremltools()
    spec = ct.utils.load_spec(str(source / coreml.PACKAGE))
    edit(spec)
    out.mkdir()
    weights = source / coreml.PACKAGE / "Data" / "com.apple.CoreML" / "weights"
    ct.utils.save_spec(spec, str(out / coreml.PACKAGE), weights_dir=str(weights))
    return out


def test_a_renamed_output_fails_naming_both_names(tiny, tmp_path):
    def rename(spec) -> None:
        spec.description.output[0].name = "scores"

    with pytest.raises(ValueError, match="output 0: named 'scores' in the file, 'logits' in the spec"):
        runner(tiny["model"], edited_copy(tiny["fp32"], tmp_path / "renamed", rename), "fp32")


def test_an_extra_input_fails_with_both_counts(tiny, tmp_path):
    def add_input(spec) -> None:
        extra = spec.description.input.add()
        extra.CopyFrom(spec.description.input[0])
        extra.name = "mask"

    with pytest.raises(ValueError, match=r"inputs: the file has 2 inputs \['image', 'mask'\] where the "
                                         r"model has 1 \['image'\]"):
        runner(tiny["model"], edited_copy(tiny["fp32"], tmp_path / "extra", add_input), "fp32")


def test_the_wrong_compute_precision_fails(tiny):
    with pytest.raises(ValueError, match="no op computes in FLOAT16 in a program converted at FLOAT16"):
        runner(tiny["model"], tiny["fp32"], "fp16")
    with pytest.raises(ValueError, match="ops compute in FLOAT16 in a program converted at FLOAT32"):
        runner(tiny["model"], tiny["fp16"], "fp32")


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_off_macos_running_is_not_applicable(tiny):
    checked = runner(tiny["model"], tiny["fp16"], "fp16")
    image = ModelArtifact(tiny["model"]).export_inputs()
    with pytest.raises(NotApplicable, match=f"Core ML predicts only on macOS .*on this {sys.platform} "
                                            "the conversion and the file's interface were checked"):
        checked.run(image)
    with pytest.raises(NotApplicable):
        checked.timed_call(image)
