"""Every selected format answers each sample the same whatever else is in its batch: row i of a
batched run equals row i run alone, and one sample repeated answers the same in every row (README,
"Batch consistency (suites/batch)")."""

import pytest

from fixtures.parity import enact
from fixtures.reference import test_reference  # noqa: F401 (the reference check of each model)

pytestmark = pytest.mark.filterwarnings("default")


def test_batch_consistency(batch_outcome):
    enact(batch_outcome)
