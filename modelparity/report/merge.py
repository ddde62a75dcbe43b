"""One report from the reports of a sharded run (`pytest suites/parity --shard K/N`, one report
directory per shard), of the same schema, as if one run had made every check.

The checks are the shards' records, each once; summary and display status are recomputed by
`build_report` and the page by `render_html`, so a merged report reads like any other. What made the
shards differ (machine, tool versions, settings) is kept in `session["shards_differ"]`, and each
shard's run in `session["shards"]`, because a green merged report of shards that ran on different
machines or tool versions is not the same claim as one run's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from modelparity.report import SCHEMA_VERSION, build_report
from modelparity.report.files import dump, new_run_id, write_atomically
from modelparity.report.html import render_html

# The reports of parity's schema (fixtures/reporting.py, ParityReporter.functions); a shard writes
# only those its checks feed.
PARITY_REPORTS = ("parity", "batch")
# Settings the shards of one selection share: a difference means they were not one selection.
SHARED_SETTINGS = ("models", "format_patterns", "opsets", "store")
# Keys the merge computes; the rest of a session is the first shard's.
MERGED_KEYS = ("models", "format_patterns", "opsets", "duration_seconds", "phases",
               "expected_failures_matching_nothing", "shard")


class MergeError(ValueError):
    """Shard reports that cannot be merged; the message names the file and the fix."""


@dataclass(frozen=True)
class ShardReport:
    """One shard's document of one report, and the file it came from."""

    directory: Path
    path: Path
    document: dict[str, Any]

    @property
    def run(self) -> dict[str, Any]:
        return self.document["run"]


def merge(directories: Sequence[Path], out: Path, allow_partial: bool = False) -> dict[str, Any]:
    """Each report of parity's schema found in the shards' `directories`, merged into OUT/NAME.json
    and OUT/NAME.html. Nothing is written unless every report merges. Returns, per report name, the
    files written, its number of checks and shards, its summary and whether it is complete."""
    found = shard_reports(directories, out)
    documents = {name: merged_document(shards, allow_partial) for name, shards in found.items()}
    written: dict[str, Any] = {}
    for name, document in documents.items():
        json_path, html_path = Path(out) / f"{name}.json", Path(out) / f"{name}.html"
        write_atomically(json_path, dump(document))
        write_atomically(html_path, partial_banner(shards_section(render_html(document), document),
                                                   document["run"]))
        written[name] = {"json": str(json_path), "html": str(html_path),
                         "checks": len(document["checks"]), "shards": len(found[name]),
                         "summary": document["summary"], "complete": document["run"]["complete"]}
    return written


def shard_reports(directories: Sequence[Path], out: Path) -> dict[str, list[ShardReport]]:
    """Report name -> the shards' documents of it, in the order the directories were given."""
    if not directories:
        raise MergeError("no shard report directories given: pass the --report-dir of each shard")
    paths = [Path(d) for d in directories]
    resolved = [p.resolve() for p in paths]
    for i, path in enumerate(paths):
        if not path.is_dir():
            raise MergeError(f"{path} is not a directory: pass the --report-dir of each shard")
        if resolved[i] in resolved[:i]:
            raise MergeError(f"{path} is given twice: pass each shard's report directory once")
        if resolved[i] == Path(out).resolve():
            raise MergeError(f"{path} is both a shard and --out: the merged report would replace that "
                             "shard's; write it to a directory of its own")
        if not any((path / f"{name}.json").is_file() for name in PARITY_REPORTS):
            raise MergeError(f"{path} has none of {', '.join(f'{n}.json' for n in PARITY_REPORTS)}: "
                             "pass the report directories of `pytest suites/parity --shard K/N "
                             "--report-dir DIR` runs (a shard that died before collecting wrote none)")
    return {name: shards for name in PARITY_REPORTS
            if (shards := [ShardReport(path, path / f"{name}.json", load_report(path / f"{name}.json"))
                           for path in paths if (path / f"{name}.json").is_file()])}


def load_report(path: Path) -> dict[str, Any]:
    """A shard's document, checked to be one of parity's schema, of this schema version."""
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise MergeError(f"{path} cannot be read ({error.strerror}): check its permissions") from None
    except ValueError as error:
        raise MergeError(f"{path} is not valid JSON ({error}): it was cut short or not written by "
                         f"modelparity; re-run that shard ({path.with_suffix('.jsonl').name} beside it "
                         "keeps every record it finished)") from None
    missing = [key for key in ("schema_version", "session", "machine", "tools", "checks", "run")
               if not isinstance(document, dict) or key not in document]
    if missing:
        raise MergeError(f"{path} is not a modelparity report of parity's schema (it lacks "
                         f"{', '.join(missing)}): pass the report directories of the shards' runs")
    if document["schema_version"] != SCHEMA_VERSION:
        raise MergeError(f"{path} has schema_version {document['schema_version']!r}, and this "
                         f"modelparity reads {SCHEMA_VERSION}: merge with the modelparity version that "
                         "wrote the shards, or re-run them with this one")
    return document


def merged_document(shards: Sequence[ShardReport], allow_partial: bool) -> dict[str, Any]:
    """The shards' checks as one document: `build_report`'s, with the first shard's machine, tools
    and tolerance profiles (what the checks ran under, not what the merging machine has)."""
    partial = [s for s in shards if not s.run.get("complete")]
    if partial and not allow_partial:
        shard = partial[0]
        running = ", ".join(shard.run.get("running", [])) or "none"
        raise MergeError(f"{shard.path} is a partial report: run {shard.run.get('id')} had not finished "
                         f"(it died or is still running; checks running at its last update: {running}). "
                         "Wait for the shard to finish or re-run it, or pass --allow-partial to merge "
                         "the checks it finished")
    missing = missing_shards(shards, allow_partial)
    first = shards[0].document
    document = build_report(merged_checks(shards), merged_session(shards))
    document.update(machine=first["machine"], tools=first["tools"],
                    tolerance_profiles=first.get("tolerance_profiles", document["tolerance_profiles"]))
    document["run"] = {"id": f"merged-{new_run_id()}", "complete": not partial and not missing,
                       "missing_shards": missing,
                       "merged_from": [s.run.get("id") for s in shards],
                       "running": sorted({n for s in partial for n in shard_running(s)}),
                       "journal": None, "partial_shards": [str(s.directory) for s in partial]}
    return document


def missing_shards(shards: Sequence[ShardReport], allow_partial: bool) -> list[str]:
    """The shards (K/N) of the sharded run that are not among `shards`; refuses shards of different
    selections or totals, a sharded run mixed with unsharded ones, and (unless `allow_partial`) a
    sharded run with shards missing: a merged report of 1 of 2 shards is not the run's report."""
    given = [s.document["session"].get("shard") for s in shards]
    if not any(given):
        return []
    if not all(given):
        unsharded = next(s.path for s, value in zip(shards, given, strict=True) if not value)
        raise MergeError(f"{unsharded} is not a shard's report (its run had no --shard), and the others "
                         "are: merge the shards of one sharded run")
    totals = {str(value).partition("/")[2] for value in given}
    selections = differing([{k: s.document["session"].get(k) for k in SHARED_SETTINGS[:3]} for s in shards])
    if len(totals) > 1 or selections:
        raise MergeError(f"these shards are not of one run: shard totals {sorted(totals)}"
                         + (f", selections differing in {json.dumps(selections)}" if selections else "")
                         + "; merge the report directories of one `--shard K/N` run, with the same options")
    total = int(totals.pop())
    missing = [f"{k}/{total}" for k in range(1, total + 1) if f"{k}/{total}" not in given]
    if missing and not allow_partial:
        raise MergeError(f"shards {', '.join(missing)} are missing (given: {', '.join(map(str, given))}): "
                         "pass every shard's report directory, or --allow-partial to merge these alone "
                         "(the merged report then says it is not complete)")
    return missing


def merged_checks(shards: Sequence[ShardReport]) -> list[dict[str, Any]]:
    """Every shard's records, each check once. A check in two shards is kept once if they agree on
    its status; if they disagree, the shards were not of one selection, and the merge refuses."""
    chosen: dict[str, tuple[dict[str, Any], ShardReport]] = {}
    for shard in shards:
        for check in shard_checks(shard):
            key = check.get("nodeid") or check["test_id"]
            if key not in chosen:
                chosen[key] = check, shard
                continue
            kept, other = chosen[key]
            if kept["status"] != check["status"]:
                raise MergeError(f"{key} is in two shards with different results: {kept['status']} in "
                                 f"{other.path}, {check['status']} in {shard.path}. Shards of one "
                                 "selection never share a check: merge the report directories of one "
                                 "sharded run (the same --shard K/N total and selection), each once")
    return sorted((check for check, _ in chosen.values()), key=lambda c: c.get("test_id", ""))


def shard_checks(shard: ShardReport) -> list[dict[str, Any]]:
    """A shard's records: its document's, or for a partial report its journal's (NAME.jsonl, every
    record finished and flushed, where the document is rewritten only every few seconds)."""
    if shard.run.get("complete"):
        return list(shard.document["checks"])
    records = {event["nodeid"]: event["record"] for event in journal_events(shard)
               if event.get("event") == "check-finished"}
    found = {c.get("nodeid") or c["test_id"]: c for c in shard.document["checks"]}
    return list({**found, **records}.values())


def shard_running(shard: ShardReport) -> list[str]:
    """The checks a partial shard had started and not finished: its journal's, else its document's."""
    events = journal_events(shard)
    if not events:
        return list(shard.run.get("running", []))
    started = {e["nodeid"] for e in events if e.get("event") == "check-started"}
    return sorted(started - {e["nodeid"] for e in events if e.get("event") == "check-finished"})


def journal_events(shard: ShardReport) -> list[dict[str, Any]]:
    """The events of the shard's journal (NAME.jsonl beside NAME.json); [] when there is none."""
    journal = shard.path.with_suffix(".jsonl")
    events = []
    for line in journal.read_text().splitlines() if journal.is_file() else []:
        try:
            events.append(json.loads(line))
        except ValueError:  # the line the process was writing when it died
            continue
    return events


def merged_session(shards: Sequence[ShardReport]) -> dict[str, Any]:
    """What the run was made of: the shards' selections together, the longest shard as the
    duration (shards run side by side), and each shard's run and what differed between them."""
    sessions = [s.document["session"] for s in shards]
    models: dict[str, str] = {}
    for session in sessions:
        for name, reference in session.get("models", {}).items():
            models.setdefault(name, reference)
    durations = [float(s.get("duration_seconds", 0)) for s in sessions]
    phases: dict[str, float] = {}
    for session in sessions:
        for phase, seconds in session.get("phases", {}).items():
            phases[phase] = round(phases.get(phase, 0.0) + seconds, 4)
    unmatched = [p for p in sessions[0].get("expected_failures_matching_nothing", [])
                 if all(p in s.get("expected_failures_matching_nothing", []) for s in sessions)]
    return {**{k: v for k, v in sessions[0].items() if k not in MERGED_KEYS},
            "models": models,
            "format_patterns": list(dict.fromkeys(p for s in sessions for p in s.get("format_patterns", []))),
            "opsets": sorted({o for s in sessions for o in s.get("opsets", [])}),
            "duration_seconds": max(durations),
            "shard_seconds_total": round(sum(durations), 2),
            "phases": phases,
            "expected_failures_matching_nothing": unmatched,
            "shards": [shard_entry(s) for s in shards],
            "shards_differ": shards_differ(shards)}


def shard_entry(shard: ShardReport) -> dict[str, Any]:
    session = shard.document["session"]
    entry = {"directory": str(shard.directory), "run": shard.run.get("id"),
             "complete": bool(shard.run.get("complete")),
             "duration_seconds": session.get("duration_seconds"),
             "checks": len(shard.document["checks"]), "machine": shard.document["machine"].get("cpu_model")}
    if "shard" in session:
        entry["shard"] = session["shard"]
    return entry


def shards_differ(shards: Sequence[ShardReport]) -> dict[str, dict[str, list[Any]]]:
    """Per part of the documents (tools, machine, tolerance profiles, shared settings), the keys whose
    values differ between shards, with each distinct value in shard order (None: absent)."""
    parts = {"tools": [s.document["tools"] for s in shards],
             "machine": [s.document["machine"] for s in shards],
             "tolerance_profiles": [s.document.get("tolerance_profiles", {}) for s in shards],
             "session": [{k: s.document["session"].get(k) for k in SHARED_SETTINGS} for s in shards]}
    found = {part: differing(mappings) for part, mappings in parts.items()}
    return {part: keys for part, keys in found.items() if keys}


def differing(mappings: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    result = {}
    for key in dict.fromkeys(k for m in mappings for k in m):
        distinct: list[Any] = []
        for value in (m.get(key) for m in mappings):
            if value not in distinct:
                distinct.append(value)
        if len(distinct) > 1:
            result[key] = distinct
    return result


def shards_section(page: str, document: Mapping[str, Any]) -> str:
    """The page with a table of the shards it was merged from, and what differed between them."""
    cells = ("shard", "directory", "run", "complete", "duration_seconds", "checks", "machine")
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(entry.get(c, '')))}</td>" for c in cells) + "</tr>"
                   for entry in document["session"]["shards"])
    differ = document["session"]["shards_differ"]
    notes = "".join(f"<li>{escape(part)} {escape(key)}: {escape(json.dumps(values))}</li>"
                    for part, keys in differ.items() for key, values in keys.items())
    section = (f"<h2>Shards</h2><table><tr>{''.join(f'<th>{c}</th>' for c in cells)}</tr>{rows}</table>"
               + (f"<p>The shards differ in:</p><ul>{notes}</ul>" if notes else ""))
    head, _, tail = page.rpartition("</body>")
    return f"{head}{section}</body>{tail}"


def partial_banner(page: str, run: Mapping[str, Any]) -> str:
    """The page with a banner under its title when a shard had not finished (files.with_banner's,
    naming the shards: the merged run itself has no process that could still be running)."""
    if run["complete"]:
        return page
    running = ", ".join(run["running"]) or "none"
    banner = (f"<p style='background:#ffcdd2;padding:6px;font-weight:bold'>PARTIAL report: merged from "
              f"shards that had not finished (died, or still running): "
              f"{escape(', '.join(run['partial_shards']))}; their checks running at their last update: "
              f"{escape(running)}. Each one's journal (NAME.jsonl in its directory) keeps every record "
              "it finished.</p>")
    return page.replace("</h1>", "</h1>" + banner, 1)
