"""Every selected format answers each sample the same whatever else is in its batch: row i of a
batched run equals row i run alone, and one sample repeated answers the same in every row (README,
"Batch consistency (suites/batch)")."""

import pytest

pytestmark = pytest.mark.filterwarnings("default")


def test_batch_consistency(batch_outcome, enact):
    enact(batch_outcome)


def test_reference(reference_check):
    """torch eager can serve as the model's reference (run before its format checks)."""
    reference_check()
