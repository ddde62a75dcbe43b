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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fixtures.shard import assign, family_costs  # noqa: E402


def project(report: dict[str, Any], machines: list[int], cores: int) -> list[dict[str, Any]]:
    """A shard's time: the fixed cost, its conversions over `cores` (prebuild), its checks one after
    the other (pytest without -n)."""
    costs = family_costs(report)
    converting = sum(c[0] for c in costs.values())
    prebuild = report["session"].get("phases", {}).get("prebuild", 0.0)
    # conversions run `cores` at a time, but not `cores` times faster: the measured prebuild says how
    # much faster (the critical path of each chain, the workers' imports); what the run spent beyond
    # its conversions and checks (start-up, factories, references, checks outside parity.json such
    # as the HTTP services') every machine is taken to pay in full
    parallel = min(cores, converting / prebuild) if prebuild > 0 else cores
    fixed = max(float(report["session"].get("duration_seconds", 0.0)) - converting / parallel
                - sum(c[1] for c in costs.values()), 0.0)

    def seconds(family: str) -> float:
        return costs[family][0] / parallel + costs[family][1]
    rows = []
    for count in machines:
        placements = {"by_count_s": assign({f: c[2] for f, c in costs.items()}, count),
                      "by_time_s": assign({f: round(seconds(f) * 1000) for f in costs}, count)}
        row: dict[str, Any] = {"machines": count}
        for label, placed in placements.items():
            loads = [0.0] * count
            for family in costs:
                loads[placed[family]] += seconds(family)
            row[label] = round(fixed + max(loads), 1)
            row[label.replace("_s", "_shards")] = [round(fixed + load, 1) for load in loads]
        row["machine_seconds"] = round(count * fixed + sum(seconds(f) for f in costs), 1)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--machines", default="1,2,4,8")
    parser.add_argument("--cores", type=int, default=2, help="conversions at a time per machine")
    options = parser.parse_args()
    report = json.loads(options.report.read_text())
    rows = project(report, [int(m) for m in options.machines.split(",")], options.cores)
    costs = family_costs(report)
    print(f"{len(report['checks'])} checks, {len(costs)} conversion families, "
          f"{sum(c[0] for c in costs.values()):.1f} s of conversions, "
          f"{sum(c[1] for c in costs.values()):.1f} s of checks (projection, from {options.report})")
    print("| machines | --shard (by count), each shard | with --shard-durations | machine-seconds |\n"
          "|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['machines']} | {row['by_count_s']} s {row['by_count_shards']} | "
              f"{row['by_time_s']} s | {row['machine_seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
