"""litert-torch: its overlay environment is recognised (absent, built from other pins or over another
base), and its .tflite files, run with LiteRT, match torch at other batches than the export's, fail on
a perturbed weight, refuse another batch where the spec freezes it, and a model litert-torch cannot
convert with a dynamic batch fails in the converter's own words."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelparity import AxisRange, ModelSpec, litert_env
from modelparity.checks.compare import compare
from modelparity.checks.tolerance import PROFILES
from modelparity.formats.base import LoadContext
from modelparity.formats.litert_torch import convert
from modelparity.formats.tflite import TFLiteRunner
from modelparity.models import load_spec, save_model_artifact


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.head = nn.Linear(8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).mean((2, 3)))


def build() -> ModelSpec:
    torch.manual_seed(0)
    return ModelSpec(
        name="conv_linear", module=ConvLinear().eval(),
        example_inputs={"image": np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)},
        output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        axis_ranges={"batch": AxisRange(1, 8)})


def build_static() -> ModelSpec:
    """The same model with its batch frozen at the export's 2."""
    spec = build()
    spec.dynamic_axes, spec.axis_ranges, spec.batch_axis = {}, {}, None
    return spec


class Flattened(ConvLinear):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image)[:, :, :1, :1], 1))


def build_flattened() -> ModelSpec:
    spec = build()
    spec.module = Flattened().eval()
    return spec


def build_perturbed() -> ModelSpec:
    """The same weights, but one output channel of the first convolution moved by 0.2."""
    spec = build()
    with torch.no_grad():
        spec.module.features[0].weight[3] += 0.2
    return spec


def converted(factory: str, root: Path, quantization: str | None = None, dynamic: bool = True
              ) -> tuple[ModelSpec, TFLiteRunner]:
    """The spec `factory` names (loaded by reference, as the worker will unpickle it) and a runner
    on the file litert-torch converts from its root artifact."""
    reference = f"{Path(__file__)}:{factory}"
    spec = load_spec(reference)
    (root / "model").mkdir(parents=True)
    (root / "out").mkdir()
    save_model_artifact(spec, reference, root / "model")
    convert("", str(root / "out"), {"quantization": quantization, "dynamic": dynamic}, str(root / "model"))
    return spec, TFLiteRunner(LoadContext(root / "out", {}, spec.input_names, spec.output_names))


def torch_outputs(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {"logits": spec.module(torch.from_numpy(inputs["image"])).numpy()}


def judged(spec: ModelSpec, runner: TFLiteRunner, profile: str, batch: int = 2):
    inputs = spec.inputs_for({"batch": batch}, seed=1)
    return compare(torch_outputs(spec, inputs), runner.run(inputs), lambda _: PROFILES[profile],
                   f"litert-torch vs torch ({profile})")


@pytest.fixture(scope="module")
def litert_environment():
    """The litert-torch overlay, which CI always creates (`python -m modelparity.litert_env`)."""
    reason = litert_env.absent_reason()
    if reason is not None:
        message = f"{reason}: install it with `{litert_env.CREATE_COMMAND}`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def clean(litert_environment, tmp_path_factory):
    return converted("build", tmp_path_factory.mktemp("litert-clean"))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_the_file_keeps_the_model_layout_and_matches_torch_at_any_batch(clean, batch):
    spec, runner = clean
    result = judged(spec, runner, "fp32", batch)
    assert result.passed, result.message()
    assert result.worst_abs < 1e-5
    assert runner.declared_shapes() == {"image": [None, 3, 12, 12]}
    assert runner.facts["layout"]["input image"] == "as model [None, 3, 12, 12]"


@pytest.mark.slow
def test_a_frozen_batch_refuses_another_batch(litert_environment, tmp_path):
    spec, runner = converted("build_static", tmp_path)
    assert runner.declared_shapes() == {"image": [2, 3, 12, 12]}
    image = np.zeros((3, 3, 12, 12), np.float32)
    with pytest.raises(ValueError, match=r"fixed shape \[2, 3, 12, 12\].*dims \[0\] are static"):
        runner.run({"image": image})


@pytest.mark.slow
def test_a_flatten_of_a_dynamic_batch_fails_to_convert_in_the_converters_words(litert_environment,
                                                                             tmp_path):
    with pytest.raises(RuntimeError, match="litert-torch worker: 'convert' raised TypeError: Shapes "
                                           "must be 1D sequences of concrete values of integer type"):
        converted("build_flattened", tmp_path)


@pytest.mark.slow
def test_a_perturbed_weight_fails_the_comparison(litert_environment, tmp_path):
    _, runner = converted("build_perturbed", tmp_path)
    result = judged(build(), runner, "fp32")
    assert not result.passed
    assert "output 'logits' [litert-torch vs torch (fp32)] FAILED" in result.message()


@pytest.mark.slow
def test_the_pt2e_dynamic_range_file_holds_int8_weights_within_the_int8_profile(litert_environment,
                                                                                  tmp_path):
    spec, runner = converted("build", tmp_path, quantization="pt2e-drq", dynamic=False)
    result = judged(spec, runner, "int8")
    assert result.passed, result.message()
    assert result.worst_abs > 1e-5  # quantised, not the FP32 file again
    assert runner.facts["tensors"]["image"]["dtype"] == "float32"


def test_a_missing_environment_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(litert_env.ENV_VARIABLE, str(tmp_path / "no-such-env"))
    assert litert_env.absent_reason() == f"the litert-torch environment is not at {tmp_path / 'no-such-env'}"


def _fake_environment(directory: Path, marker: str) -> None:
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").touch()
    (directory / litert_env.MARKER).write_text(marker)


def test_an_environment_from_other_pins_or_over_another_base_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(litert_env.ENV_VARIABLE, str(tmp_path))
    pins, base = litert_env.marker_text().splitlines()
    _fake_environment(tmp_path, f"pins 0123456789abcdef\n{base}\n")
    assert litert_env.absent_reason() == (f"the litert-torch environment at {tmp_path} was built from "
                                          "other pins")
    (tmp_path / litert_env.MARKER).write_text(f"{pins}\nbase 0123456789abcdef /elsewhere/site-packages\n")
    assert "was built over another environment (/elsewhere/site-packages" in litert_env.absent_reason()
    (tmp_path / litert_env.MARKER).write_text(litert_env.marker_text())
    assert litert_env.absent_reason() is None


@pytest.mark.slow
def test_the_static_format_is_judged_at_the_export_sizes_and_refuses_other_shapes(litert_environment,
                                                                                    run_parity, run_dynamic):
    """A declared fixed-shape format end to end: parity checks it at the export's batch (its larger
    batch is not applicable), suites/dynamic passes it for refusing another batch."""
    model = f"{Path(__file__)}:build"
    parity = run_parity("--model", model, "--formats", "litert-torch-static", "-rs")
    parity.assert_outcomes(passed=2, skipped=1)  # the reference's check, b1 at the export's sizes
    parity.stdout.fnmatch_lines(["*not applicable: litert-torch-static has fixed shapes by design*"])
    run_dynamic("--model", model, "--formats", "litert-torch-static").assert_outcomes(passed=2)
