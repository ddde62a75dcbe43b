"""Bad model specs and references fail early, naming the model and the fix."""

import numpy as np
import pytest

from modelparity.models import load_spec, resolve_reference
from modelparity.spec import AxisRange, SpecError

MODELS = f"{__file__.rsplit('/', 1)[0]}/models/tiny_model.py"


@pytest.mark.parametrize("function, message", [
    ("build_wrong_type", "returned dict, expected modelparity.ModelSpec"),
    ("build_bad_axis", "dynamic_axes names 'imgae', which is neither an input (['image'])"),
    ("build_axis_out_of_rank", "is dim 5 of input 'image', which has only 4 dims"),
    ("build_raises", "the factory raised RuntimeError: weights file missing"),
    ("no_such_function", "has no callable 'no_such_function'"),
])
def test_bad_user_models_are_explained(function, message):
    with pytest.raises(SpecError, match="tiny_model.py") as error:
        load_spec(f"{MODELS}:{function}")
    assert message in str(error.value)


def test_missing_file_and_module_are_explained():
    with pytest.raises(SpecError, match="no such file"):
        load_spec("does/not/exist.py:build")
    with pytest.raises(SpecError, match="cannot import 'no_such_package_xyz.models'"):
        load_spec("no_such_package_xyz.models:build")


def test_unknown_model_name_lists_the_builtins():
    with pytest.raises(SpecError, match="built-in models are .*resnet18"):
        resolve_reference("resnet19")


def test_axis_range_and_example_must_agree():
    from tests.models.tiny_model import build

    with pytest.raises(SpecError, match="the example has batch=1, outside its declared range 2..8"):
        load_spec_from(build(axis_ranges={"batch": AxisRange(2, 8)}))
    with pytest.raises(SpecError, match="has no entry in axis_ranges"):
        load_spec_from(build(axis_ranges={}))


def test_tolerance_override_without_reason_is_rejected():
    from tests.models.tiny_model import build

    with pytest.raises(SpecError, match="needs a written 'reason'"):
        load_spec_from(build(tolerances={"profile:fp16": {"atol": 0.5}}))


def load_spec_from(spec):
    from modelparity.spec import validate

    return validate(spec, "test")


def test_default_inputs_follow_the_example_and_the_sizes():
    from tests.models.tiny_model import build

    spec = load_spec_from(build())
    drawn = spec.inputs_for({"batch": 5}, seed=1)["image"]
    assert drawn.shape == (5, 3, 16, 16) and drawn.dtype == np.float32
    assert np.array_equal(drawn, spec.inputs_for({"batch": 5}, seed=1)["image"])
    assert spec.export_sizes() == {"batch": 2}


def test_the_root_artifact_records_the_interface_a_service_needs(tmp_path):
    """A service reads names, axes, classifier outputs and the pre-processing from the artifact,
    without calling the factory again (digits_cnn trains in its factory)."""
    from modelparity.models import ModelArtifact, save_model_artifact
    from tests.models import tiny_model

    reference = f"{tiny_model.__file__}:build_with_preprocess"
    save_model_artifact(tiny_model.build_with_preprocess(), reference, tmp_path)
    interface = ModelArtifact(tmp_path).interface()
    assert interface.name == "tiny_images" and interface.classifier_outputs == {"logits": -1}
    assert interface.preprocess.__qualname__ == "preprocess_image" and interface.module is None
    assert interface.axis_ranges["batch"].max == 8 and interface.dynamic_axes["image"] == {0: "batch"}


def test_real_samples_are_taken_as_seeded_rows_and_checked_against_the_example():
    from tests.models import tiny_model

    pool = np.random.default_rng(3).uniform(0, 1, size=(3, 3, 16, 16)).astype(np.float32)
    spec = tiny_model.build(samples=lambda: {"image": pool})
    four = spec.inputs_for({"batch": 4}, seed=7)["image"]
    assert four.shape == (4, 3, 16, 16) and all(any(np.array_equal(row, s) for s in pool) for row in four)
    assert np.array_equal(four, spec.inputs_for({"batch": 4}, seed=7)["image"])
    two = spec.inputs_for({"batch": 2}, seed=8)["image"]
    assert all(any(np.array_equal(row, s) for s in pool) for row in two)
    wrong = tiny_model.build(samples=lambda: {"image": pool.astype(np.float64)})
    with pytest.raises(SpecError, match="'image' is float64 of rank 4; the example is float32"):
        wrong.inputs_for({"batch": 1}, seed=0)
