"""Latency of every selected format of every selected model, per batch, with pytest-benchmark.

Run with --benchmark-only; compare with a saved run with --benchmark-compare and gate with
--benchmark-compare-fail (see the README). Nothing here asserts a latency.
"""

import pytest

pytestmark = pytest.mark.filterwarnings("default")


def test_latency(latency_subject, benchmark, measure_latency):
    """latency_subject first: a format that cannot be built or run errors at setup, with its reason,
    before pytest-benchmark's fixture exists (which would then warn it was never used)."""
    measure_latency(benchmark, latency_subject)


def test_service_load(load_subject, benchmark, measure_load):
    """N concurrent clients against the HTTP service for a fixed time; every request must succeed.
    Throughput and p50/p99 are in the report; nothing here asserts a speed."""
    result = measure_load(benchmark, load_subject)
    if result.failed:
        pytest.fail(f"{load_subject.case.format} under load: {result.summary()}; statuses "
                    f"{result.statuses}; first failures: {result.first_failures}", pytrace=False)
