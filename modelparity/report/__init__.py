"""Reports: parity.json (schema in parity.schema.json) and a self-contained parity.html."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelparity.checks.tolerance import PROFILES
from modelparity.machine import machine_info, tool_versions

SCHEMA_PATH = Path(__file__).with_name("parity.schema.json")
SCHEMA_VERSION = 1
STATUSES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


# How a matrix cell (one model x format over its batches) reads: the worst of what ran; a skip only
# when nothing ran (a batch-4 check skipped beside a passing batch-1 one is a pass); a pass that an
# uninformative reference could not have failed reads "vacuous", never plain green.
CELL_ORDER = ("failed", "error", "xpassed", "xfailed", "vacuous", "passed", "not-judged", "skipped")


def display_status(check: Mapping[str, Any]) -> str:
    """A check's status as the matrix shows it."""
    if check["status"] == "passed" and check.get("uninformative"):
        return "vacuous"
    if check["status"] == "skipped" and check.get("skip_kind") == "not-judged":
        return "not-judged"
    return check["status"]


def cell_status(checks: Sequence[Mapping[str, Any]]) -> str:
    statuses = {display_status(c) for c in checks}
    return next(s for s in CELL_ORDER if s in statuses)


def build_report(checks: Sequence[Mapping[str, Any]], session: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document: one record per check plus what the run was made of."""
    summary = {status: 0 for status in STATUSES}
    checks = [{**check, "display_status": display_status(check)} for check in checks]
    for check in checks:
        summary[check["status"]] += 1
    summary["vacuous"] = sum(c["display_status"] == "vacuous" for c in checks)
    summary["not-judged"] = sum(c["display_status"] == "not-judged" for c in checks)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "tools": tool_versions(),
        "tolerance_profiles": {name: p.to_dict() for name, p in PROFILES.items()},
        "session": dict(session),
        "summary": summary,
        "checks": list(checks),
    }
