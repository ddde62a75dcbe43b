"""What a measured parity run would cost split over N machines: a projection, not a measurement.

    python benchmarks/grid_projection.py reports/parity.json --machines 1,2,4,8 [--cores 2]

From one run's report (ideally from an empty store, so that every conversion's time is in it): each
conversion family's cost is its conversions' build seconds (each built once, `build_seconds` of the
steps built now) plus its checks' own seconds (`test_seconds`, build excluded); families are placed
on N shards the way --shard places them (fixtures/shard.py: heaviest first onto the lightest shard,
here by measured seconds rather than by count), and a shard's time is its load spread over the
machine's cores (the prebuild converts `--cores` at a time) plus the run's fixed cost (start-up,
factories, references: `session.phases`), which every machine pays. Shards by count are what
--shard does; the measured placement is the lower bound a duration-based split would reach.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fixtures.shard import assign  # noqa: E402


def family_costs(report: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and checks per conversion family (MODEL::ROOT, the chain's first node)."""
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for check in report["checks"]:
        chain = check.get("chain") or [{"id": check["format"]}]
        family = f"{check['model']}::{chain[0]['id']}"
        built = sum(s["build_seconds"] for s in check.get("build", []) if s.get("built_now"))
        own = check.get("test_seconds", 0.0) - check.get("phases", {}).get("build", 0.0)
        seconds[family] += built + max(own, 0.0)
        counts[family] += 1
    return dict(seconds), dict(counts)


def project(report: dict[str, Any], machines: list[int], cores: int) -> list[dict[str, Any]]:
    seconds, counts = family_costs(report)
    phases = report["session"].get("phases", {})
    fixed = sum(phases.get(name, 0.0) for name in ("startup", "factory", "reference", "floors"))
    rows = []
    for count in machines:
        by_count = assign({f: counts[f] for f in seconds}, count)
        by_time = assign({f: round(seconds[f] * 1000) for f in seconds}, count)
        loads_count, loads_time = [0.0] * count, [0.0] * count
        for family, cost in seconds.items():
            loads_count[by_count[family]] += cost
            loads_time[by_time[family]] += cost
        rows.append({"machines": count, "families": len(seconds),
                     "by_count_s": round(fixed + max(loads_count) / cores, 1),
                     "by_time_s": round(fixed + max(loads_time) / cores, 1),
                     "machine_seconds": round(count * fixed + sum(seconds.values()) / cores, 1)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--machines", default="1,2,4,8")
    parser.add_argument("--cores", type=int, default=2, help="conversions at a time per machine")
    options = parser.parse_args()
    report = json.loads(options.report.read_text())
    rows = project(report, [int(m) for m in options.machines.split(",")], options.cores)
    seconds, _ = family_costs(report)
    print(f"{len(report['checks'])} checks, {len(seconds)} conversion families, "
          f"{sum(seconds.values()):.1f} s of conversions and checks (projection, from {options.report})")
    print("| machines | --shard (by count) | by measured time | machine-seconds |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['machines']} | {row['by_count_s']} s | {row['by_time_s']} s | "
              f"{row['machine_seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
