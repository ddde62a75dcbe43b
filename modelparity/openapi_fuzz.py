"""A schemathesis run over a service's own OpenAPI schema: for every operation it declares, requests
generated from the schema (bounded in examples and in time), held to the one rule a service in front
of a model must keep whatever it is sent: no answer is a 5xx."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

EXAMPLES_PER_OPERATION = 40
TIME_BUDGET_SECONDS = 60.0
MAX_PROBLEMS = 10


def fuzz_service(base_url: str, examples: int = EXAMPLES_PER_OPERATION,
                 seconds: float = TIME_BUDGET_SECONDS) -> tuple[list[dict[str, Any]], list[str]]:
    """(one row per operation: requests sent and the statuses answered; the 5xx answers, each with
    the curl command that reproduces it). Generation is seeded (derandomized): a run repeats."""
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    deadline = time.monotonic() + seconds
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses = _fuzz_operation(operation, base_url, examples, deadline, problems)
        rows.append({"operation": operation.label, "requests": sum(statuses.values()),
                     "statuses": {str(code): count for code, count in sorted(statuses.items())},
                     "out_of_time": time.monotonic() > deadline})
    if not rows:
        problems.append(f"{base_url}/openapi.json declares no operation: nothing was fuzzed")
    return rows, problems


def _fuzz_operation(operation: Any, base_url: str, examples: int, deadline: float,
                    problems: list[str]) -> Counter[int]:
    """Statuses of up to `examples` generated requests (none once `deadline` passed); a 5xx is
    appended to `problems`. No shrinking: each answer is recorded, none is retried."""
    from hypothesis import HealthCheck, Phase, given, settings

    statuses: Counter[int] = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def probe(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=base_url, timeout=60)
        statuses[response.status_code] += 1
        if response.status_code >= 500 and len(problems) < MAX_PROBLEMS:
            problems.append(f"{operation.label} answered {response.status_code}: "
                            f"{response.text[:300]}\n  reproduce: {case.as_curl_command()}")

    probe()
    return statuses
