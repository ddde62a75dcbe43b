"""The artifact store: every artifact built once, on disk, under a content key.

The key hashes everything that determines the artifact: the model's weights and code identity, the
conversion chain with its parameters, and the versions of the tools that built it. An entry is a
directory that appears atomically (built in a temporary directory, then renamed) under a per-key
file lock, so pytest-xdist workers that need the same artifact build it once. A failed build is
stored too (its error and log), so a warm re-run does not repeat a slow failure; a timeout is not
stored, because it may depend on the machine's load.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "artifact.json"


class StoredBuildError(RuntimeError):
    """A build failed (now or in an earlier run); `details` is what the report shows."""

    def __init__(self, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.details = dict(details)


@dataclass(frozen=True)
class Artifact:
    """A built entry: its directory and its manifest."""

    key: str
    path: Path
    manifest: Mapping[str, Any]

    @property
    def built_now(self) -> bool:
        return bool(self.manifest.get("built_now"))


def content_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of JSON-serialisable key parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class ArtifactStore:
    """Directories under `root`, one per key. `rebuild_before`: entries older are rebuilt."""

    def __init__(self, root: Path, rebuild_before: float | None = None) -> None:
        self.root = Path(root)
        self.rebuild_before = rebuild_before
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def root_of(entry: Path) -> Path:
        """The store an entry directory (from path_for) lives in: how a builder in a child process,
        given only paths, reaches the store for an artifact every model shares (a compiled tool)."""
        return Path(entry).parent.parent

    def get_or_build(self, key: str, parts: Mapping[str, Any],
                     build: Callable[[Path], Mapping[str, Any]]) -> Artifact:
        """Return the entry for `key`, building it with `build(tmp_dir) -> info` if needed.

        `build` raises StoredBuildError to record a failure (`details["cache"] = False` keeps it
        out of the store).
        """
        final = self.path_for(key)
        existing = self._read(final)
        if existing is not None:
            return self._ready(key, final, existing)
        with self._lock(key):
            existing = self._read(final)
            if existing is not None:
                return self._ready(key, final, existing)
            return self._build(key, parts, final, build)

    def _build(self, key: str, parts: Mapping[str, Any], final: Path,
               build: Callable[[Path], Mapping[str, Any]]) -> Artifact:
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        started = time.time()
        manifest: dict[str, Any] = {"key": key, "parts": dict(parts), "created": started}
        failure: StoredBuildError | None = None
        try:
            manifest["info"] = dict(build(tmp))
            manifest["status"] = "built"
        except StoredBuildError as error:
            failure = error
            manifest.update(status="failed", error=str(error), details=error.details)
        manifest["build_seconds"] = round(time.time() - started, 3)
        if failure is not None and not failure.details.get("cache", True):
            shutil.rmtree(tmp, ignore_errors=True)
            raise failure
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if final.exists():
            trash = self.root / "tmp" / f"{key}.old.{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)
        return self._ready(key, final, {**manifest, "built_now": True})

    def _ready(self, key: str, path: Path, manifest: Mapping[str, Any]) -> Artifact:
        if manifest.get("status") == "failed":
            cached = "" if manifest.get("built_now") else " (stored failure; --rebuild retries)"
            raise StoredBuildError(f"{manifest['error']}{cached}", manifest.get("details", {}))
        return Artifact(key, path, manifest)

    def _read(self, final: Path) -> dict[str, Any] | None:
        manifest_path = final / MANIFEST
        if not manifest_path.exists():
            return None
        manifest = json.loads(manifest_path.read_text())
        if self.rebuild_before is not None and manifest.get("created", 0) < self.rebuild_before:
            return None
        return manifest

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock_dir = self.root / "locks"
        lock_dir.mkdir(exist_ok=True)
        with open(lock_dir / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
