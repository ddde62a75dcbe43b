"""Latency of every selected format of every selected model, per batch, with pytest-benchmark.

Run with --benchmark-only; compare with a saved run with --benchmark-compare and gate with
--benchmark-compare-fail (see the README). Nothing here asserts a latency.
"""

import pytest

from fixtures.latency import measure

pytestmark = pytest.mark.filterwarnings("default")


def test_latency(latency_subject, benchmark):
    """latency_subject first: a format that cannot be built or run errors at setup, with its reason,
    before pytest-benchmark's fixture exists (which would then warn it was never used)."""
    measure(benchmark, latency_subject)
