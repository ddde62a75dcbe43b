"""Every selected format of every selected model gives torch eager's outputs, within its profile.

Runs at batch 1 and at a batch > 1. See the README for the pass rule and the tolerance profiles.
"""

import pytest

# A user's model may warn in its own forward(); that is reported, not turned into an error
# (filterwarnings=error is for the harness's own tests).
pytestmark = pytest.mark.filterwarnings("default")


def test_parity(parity_outcome, enact):
    enact(parity_outcome)


def test_reference(reference_check):
    """torch eager can serve as the model's reference (run before its format checks)."""
    reference_check()
