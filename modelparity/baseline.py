"""Golden outputs a team commits, for regression checks when the opset, an exporter or a runtime changes.

A baseline is a folder (baselines/NAME by default): `baseline.json` (versioned, checked against
baseline.schema.json) holds the provenance of the run that saved it (tool versions, machine) and one
entry per model x format (opset requested and written, exporter, format chain, runtime, output shapes,
the sha256 of its file); `MODEL/inputs.npz` holds the inputs every format ran on and
`MODEL/FORMAT.npz` its outputs. Loading checks all of it, so a missing, edited or truncated file is an
error naming that file, never a pass.

A format is compared with its own entry, and with the entries of its family (the same chain at
another opset: `onnx-legacy-op13-ort` and `onnx-legacy-op17-ort` are the family
`onnx-legacy-op{N}-ort`), so a baseline saved at one opset checks a run at another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1
MANIFEST = "baseline.json"
SCHEMA_PATH = Path(__file__).resolve().parent / "report" / "baseline.schema.json"
_OPSET_IN_ID = re.compile(r"(?<=-op)\d+(?=-|$)|(?<=-req)\d+(?=-|$)")


class BaselineError(ValueError):
    """A baseline that cannot be trusted; the message names the file and the fix."""


def family(format_id: str) -> str:
    """The format id with its export opset abstracted: the same chain at any opset."""
    return _OPSET_IN_ID.sub("{N}", format_id)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write an .npz atomically (xdist workers may write the same inputs) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(handle, "wb") as stream:
        np.savez_compressed(stream, **arrays)
    os.replace(temporary, path)
    return file_digest(path)


def _by_check(entry: Mapping[str, Any]) -> tuple[str, str]:
    return entry["model"], entry["format"]


def write_manifest(directory: Path, name: str, provenance: Mapping[str, Any],
                   inputs: Mapping[str, Mapping[str, Any]], entries: list[Mapping[str, Any]],
                   not_run: list[Mapping[str, Any]]) -> Path:
    """`not_run`: formats skipped where the baseline was saved (not applicable, e.g. bf16 on a CPU
    without it), so that a machine where they apply skips them with that reason instead of failing."""
    manifest = {"format": "modelparity-baseline", "version": VERSION, "name": name,
                "provenance": dict(provenance), "inputs": dict(inputs),
                "entries": sorted(entries, key=_by_check), "not_run": sorted(not_run, key=_by_check)}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


@dataclass
class Baseline:
    directory: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @classmethod
    def load(cls, directory: Path) -> Baseline:
        """Read and verify a baseline: schema, version, and the digest of every file it names."""
        import jsonschema

        path = directory / MANIFEST
        fix = f"save one with `pytest suites/opset --save-baseline {directory.name}`"
        if not path.is_file():
            raise BaselineError(f"baseline {directory.name!r}: {path} does not exist; {fix}")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BaselineError(f"{path} is not valid JSON ({error}); restore it from version control "
                                f"or {fix}") from error
        if isinstance(manifest, dict) and manifest.get("version") not in (None, VERSION):
            raise BaselineError(f"{path} is baseline format version {manifest.get('version')}; this "
                                f"modelparity reads version {VERSION}: {fix}")
        try:
            jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text()))
        except jsonschema.ValidationError as error:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise BaselineError(f"{path} does not match the baseline schema at {where}: "
                                f"{error.message}; restore it or {fix}") from None
        baseline = cls(directory, manifest)
        files = [(e["file"], e["sha256"]) for e in (*manifest["inputs"].values(), *manifest["entries"])]
        for relative, digest in files:
            target = directory / relative
            if not target.is_file():
                raise BaselineError(f"{target}, named in {path}, does not exist; restore it or {fix}")
            if file_digest(target) != digest:
                raise BaselineError(f"{target} does not match the sha256 {path} records for it (edited "
                                    f"or truncated); restore it or {fix}")
        return baseline

    def inputs(self, model: str) -> dict[str, np.ndarray] | None:
        entry = self.manifest["inputs"].get(model)
        if entry is None:
            return None
        with np.load(self.directory / entry["file"]) as data:
            return {name: data[name] for name in data.files}

    def entries_for(self, model: str, format_id: str) -> list[dict[str, Any]]:
        """The format's own entry, else its family's entries at other opsets."""
        entries = [e for e in self.manifest["entries"] if e["model"] == model]
        own = [e for e in entries if e["format"] == format_id]
        return own or [e for e in entries if e["family"] == family(format_id)]

    def not_run(self, model: str, format_id: str) -> str | None:
        """Why the format did not run where the baseline was saved (None: it ran, or was not selected)."""
        return next((e["reason"] for e in self.manifest.get("not_run", [])
                     if e["model"] == model and e["format"] == format_id), None)

    def outputs(self, entry: Mapping[str, Any]) -> dict[str, np.ndarray]:
        with np.load(self.directory / entry["file"]) as data:
            return {name: data[name] for name in data.files}

    def tool_changes(self, tools: Mapping[str, str]) -> dict[str, list[str]]:
        """Tools whose version differs from the baseline's: {tool: [then, now]}."""
        then = self.manifest["provenance"].get("tools", {})
        return {k: [str(then.get(k)), str(tools.get(k))] for k in sorted({*then, *tools})
                if then.get(k) != tools.get(k)}
