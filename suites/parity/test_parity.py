"""Every selected format of every selected model gives torch eager's outputs, within its profile.

Runs at batch 1 and at a batch > 1. See the README for the pass rule and the tolerance profiles.
"""

import pytest

from fixtures.parity import enact
from fixtures.reference import test_reference  # noqa: F401 (the reference check of each model)

# A user's model may warn in its own forward(); that is reported, not turned into an error
# (filterwarnings=error is for the harness's own tests).
pytestmark = pytest.mark.filterwarnings("default")


def test_parity(parity_outcome):
    enact(parity_outcome)
