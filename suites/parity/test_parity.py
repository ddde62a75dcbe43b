"""Every selected format of every selected model gives torch eager's outputs, within its profile.

Runs at batch 1 and at a batch > 1. See the README for the pass rule and the tolerance profiles.
"""

from fixtures.parity import enact


def test_parity(parity_outcome):
    enact(parity_outcome)
