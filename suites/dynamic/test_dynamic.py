"""Every selected format keeps the model's declared dynamic axes: symbolic in the artifact, right at
hypothesis-drawn shapes, output shapes as declared; or it declares fixed shapes and refuses others.

See the README's "Dynamic axes" for the statuses and the profiles (--dynamic-profile ci|nightly).
"""

import pytest

pytestmark = pytest.mark.filterwarnings("default")


def test_dynamic_axes(dynamic_check):
    dynamic_check()


def test_reference(reference_check):
    """torch eager can serve as the model's reference (run before its format checks)."""
    reference_check()
