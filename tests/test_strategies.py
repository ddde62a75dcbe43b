"""The hypothesis strategies draw only sizes a spec allows, tie dims that share an axis name, and
cap the batch in the ci profile."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.strategies import CI_BATCH_CAP, axis_sizes
from modelparity.spec import AxisRange
from tests.models.tiny_model import build


def square_spec():
    spec = build(name="square")
    spec.example_inputs["image"] = np.zeros((2, 3, 64, 64), dtype=np.float32)
    spec.dynamic_axes = {"image": {0: "batch", 2: "size", 3: "size"}}
    spec.axis_ranges = {"batch": AxisRange(1, 32), "size": AxisRange(32, 128, multiple_of=32)}
    return spec


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_drawn_sizes_respect_ranges_steps_and_the_ci_cap(data):
    spec = square_spec()
    sizes = data.draw(axis_sizes(spec, "ci"))
    assert 1 <= sizes["batch"] <= CI_BATCH_CAP
    assert sizes["size"] in (32, 64, 96, 128)
    inputs = spec.inputs_for(sizes, seed=0)
    assert inputs["image"].shape == (sizes["batch"], 3, sizes["size"], sizes["size"])  # height == width


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_nightly_draws_the_whole_batch_range(data):
    sizes = data.draw(axis_sizes(square_spec(), "nightly"))
    assert 1 <= sizes["batch"] <= 32
