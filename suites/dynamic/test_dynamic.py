"""Every selected format keeps the model's declared dynamic axes: symbolic in the artifact, right at
hypothesis-drawn shapes, output shapes as declared; or it declares fixed shapes and refuses others.

See the README's "Dynamic axes" for the statuses and the profiles (--dynamic-profile ci|nightly).
"""

import pytest

from fixtures.reference import test_reference  # noqa: F401 (the reference check of each model)

pytestmark = pytest.mark.filterwarnings("default")


def test_dynamic_axes(dynamic_check):
    dynamic_check()
