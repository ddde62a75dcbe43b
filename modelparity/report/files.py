"""A report's files for one run, written so that nothing is lost and nothing is stale.

NAME.jsonl is the journal: a line when the run starts, one when each check starts, one with each
check's record as it finishes, each flushed at once, so a run that dies (kill -9, a segfault in the
test process) leaves every finished record and the name of the check that was running. NAME.json and
NAME.html are replaced when the run starts (an empty report of this run), rewritten as a partial
report at most every PARTIAL_EVERY seconds while checks finish, and written complete at the end.
Every document carries `run`: this run's id, whether it is complete, and what was running, so a
report directory never shows a previous run's results as this run's.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PARTIAL_EVERY = 5.0  # seconds between partial rewrites of NAME.json/.html while checks finish
NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

# render(records, run) -> (the JSON document, the HTML page)
Render = Callable[[list[dict[str, Any]], dict[str, Any]], tuple[dict[str, Any], str]]


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def jsonable(value: Any) -> Any:
    """`value` with NaN and ±Inf as the strings "NaN", "Infinity", "-Infinity" (JSON has no such
    numbers: a runtime that answers NaN must not take the report down), paths and tuples plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else NONFINITE[str(value)]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        return jsonable(value.item())
    return str(value)


def dump(document: Any, indent: int | None = 1) -> str:
    return json.dumps(jsonable(document), indent=indent, allow_nan=False)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)


def with_banner(page: str, run: Mapping[str, Any]) -> str:
    """The page with a banner under its title when the run is not complete."""
    if run.get("complete"):
        return page
    running = ", ".join(run.get("running", [])) or "none"
    journal = f" Every finished record is in {run['journal']}." if run.get("journal") else ""
    banner = (f"<p style='background:#ffcdd2;padding:6px;font-weight:bold'>PARTIAL report: run "
              f"{run['id']} has not finished (or died); checks running at the last update: "
              f"{running}.{journal}</p>")
    return page.replace("</h1>", "</h1>" + banner, 1)


class ReportFiles:
    """NAME.jsonl, NAME.json and NAME.html in `directory` for the run `run_id`."""

    def __init__(self, directory: Path, name: str, run_id: str, render: Render) -> None:
        self.directory = Path(directory)
        self.name = name
        self.render = render
        self.run: dict[str, Any] = {"id": run_id, "started": time.time(), "complete": False,
                                    "running": [], "journal": str(self.directory / f"{name}.jsonl")}
        self._records: dict[str, dict[str, Any]] = {}
        self._running: dict[str, float] = {}
        self._written = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.directory / f"{name}.jsonl", "w")
        self._append({"event": "run-started", "run": self.run_id})
        self._write()

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    def started(self, nodeid: str) -> None:
        self._running[nodeid] = time.time()
        self._append({"event": "check-started", "nodeid": nodeid})
        if time.time() - self._written >= PARTIAL_EVERY:
            self._write()

    def finished(self, nodeid: str, record: dict[str, Any]) -> None:
        """A check's record (again, if a later phase changed it): journalled now, reports soon."""
        self._running.pop(nodeid, None)
        self._records[nodeid] = record
        self._append({"event": "check-finished", "nodeid": nodeid, "record": record})
        if time.time() - self._written >= PARTIAL_EVERY:
            self._write()

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def close(self) -> None:
        """The run ended: the complete reports, and the journal's last line."""
        self.run["complete"] = True
        self._running.clear()
        self._write()
        self._append({"event": "run-finished", "run": self.run_id, "checks": len(self._records)})
        self._journal.close()

    def _append(self, event: dict[str, Any]) -> None:
        self._journal.write(dump({"time": round(time.time(), 3), **event}, indent=None) + "\n")
        self._journal.flush()

    def _write(self) -> None:
        self.run["running"] = sorted(self._running)
        self.run["seconds"] = round(time.time() - self.run["started"], 2)
        document, page = self.render(self.records(), dict(self.run))
        document["run"] = dict(self.run)
        write_atomically(self.directory / f"{self.name}.json", dump(document))
        write_atomically(self.directory / f"{self.name}.html", with_banner(page, self.run))
        self._written = time.time()
