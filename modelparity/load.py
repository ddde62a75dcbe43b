"""A load test of a running service: N clients on loopback, each posting the same request back to
back for a fixed time; throughput, latency percentiles over every request, and every failure.

Each client is a thread with its own HTTP connection (httpx releases the GIL while it waits), so
the service, not the clients, is what saturates; on a 2-core machine the clients and the service
share the CPU, which the report's machine facts show.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

REQUEST_TIMEOUT = 60.0


@dataclass
class LoadResult:
    clients: int
    seconds: float
    requests: int
    failed: int
    statuses: dict[str, int]
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.clients} clients for {self.seconds:.1f} s: {self.requests} requests, "
                f"{self.throughput_rps:.1f}/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"{self.failed} failed")


def run_load(url: str, path: str, body: bytes, content_type: str, clients: int, seconds: float
             ) -> LoadResult:
    """POST `body` to `url + path` from `clients` threads until `seconds` have passed. A request
    fails if it raises (connection reset, timeout) or answers anything but 200."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as session:
            start.wait()
            while time.perf_counter() < deadline[0]:
                began = time.perf_counter()
                try:
                    answer = session.post(path, content=body, headers={"content-type": content_type})
                    status = str(answer.status_code)
                    problem = None if answer.status_code == 200 else f"{status}: {answer.text[:200]}"
                except httpx.HTTPError as error:
                    status, problem = "no answer", f"{type(error).__name__}: {error}"
                latencies[index].append(time.perf_counter() - began)
                with lock:
                    statuses[status] += 1
                    if problem and len(failures) < 5:
                        failures.append(problem)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 10)
    elapsed = time.perf_counter() - began
    samples = np.array([s for per_client in latencies for s in per_client]) * 1000
    if samples.size == 0:
        samples = np.array([np.nan])
    requests = sum(statuses.values())
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return LoadResult(clients=clients, seconds=round(elapsed, 3), requests=requests,
                      failed=requests - statuses.get("200", 0), statuses=dict(sorted(statuses.items())),
                      throughput_rps=round(statuses.get("200", 0) / elapsed, 2),
                      p50_ms=round(float(p50), 3), p90_ms=round(float(p90), 3),
                      p99_ms=round(float(p99), 3), max_ms=round(float(np.max(samples)), 3),
                      first_failures=failures)
