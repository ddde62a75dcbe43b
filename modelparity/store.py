"""The artifact store: every artifact built once, on disk, under a content key.

The key hashes everything that determines the artifact: the model's weights and code identity, the
conversion chain with its parameters, the versions of the tools that built it, and (for a derived
artifact) the build id of the parent it was made from. An entry is a directory that appears
atomically (built in a temporary directory, then renamed) under a per-key file lock, so pytest-xdist
workers that need the same artifact build it once. A failed build is stored too (its error and log),
so a warm re-run does not repeat a slow failure; a timeout is not stored, because it may depend on
the machine's load, but this store instance remembers it, so later checks in the session do not wait
for it again. A directory whose manifest does not parse is not an entry: it is rebuilt.

With a shared tier (modelparity.remote_store: object storage, for a grid of machines), this store is
its local cache: a miss here is looked up there (and downloaded whole, or not at all), a build here
is published there, and a machine waits for another's lease on a key instead of building it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from modelparity.remote_store import LeaseTimeout, RemoteStoreError

if TYPE_CHECKING:
    from modelparity.remote_store import RemoteTier

MANIFEST = "artifact.json"
DEFAULT_BUILD_TIMEOUT = 600.0  # what a lock waiter assumes when the caller does not say


class StoredBuildError(RuntimeError):
    """A build failed (now or in an earlier run); `details` is what the report shows.

    details["cache"] False keeps the failure out of the store (the environment's fault, or a
    timeout); details["remember"], a note such as "timed out earlier in this session", makes this
    store instance replay the failure with that note instead of building again.
    """

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

    @property
    def build_id(self) -> str:
        """Changes whenever the entry is (re)built, also under the same key: a child's key holds it,
        so children of a rebuilt parent are built again. Entries from before build ids: their
        creation stamp."""
        return str(self.manifest.get("build") or f"created {self.manifest['created']!r}")


def content_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of JSON-serialisable key parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _valid(manifest: Any, key: str) -> bool:
    """Whether a parsed manifest is an entry's: a half-written or hand-edited one is not."""
    return (isinstance(manifest, dict) and manifest.get("key") == key
            and isinstance(manifest.get("created"), int | float)
            and isinstance(manifest.get("parts", {}), dict)
            and (manifest.get("status") == "built"
                 or (manifest.get("status") == "failed" and isinstance(manifest.get("error"), str)
                     and isinstance(manifest.get("details", {}), dict))))


class ArtifactStore:
    """Directories under `root`, one per key. `rebuild_before`: entries older are rebuilt.
    `remote`: the shared tier this store caches (None: this store is all there is).

    `lock_margin`: how much longer than a build's timeout a second process waits for the key's lock
    (the holder's post-processing after its converter child is done or killed)."""

    lock_margin = 60.0

    def __init__(self, root: Path, rebuild_before: float | None = None,
                 remote: RemoteTier | None = None) -> None:
        self.root = Path(root)
        self.rebuild_before = rebuild_before
        self.remote = remote
        self._unusable: dict[str, str] = {}  # key -> build id of a shared entry this run cannot use
        # what the shared tier did that a run should know (a broken entry replaced, the tier lost
        # mid-run, a publication that failed): said once each, at the end (never a warning, which a
        # project's filterwarnings = error would turn into a crash)
        self.notices: list[str] = []
        self.remote_down: str | None = None  # why the shared tier is no longer used this session
        self.root.mkdir(parents=True, exist_ok=True)
        self._remembered: dict[str, StoredBuildError] = {}
        self._clean_tmp()

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    @staticmethod
    def root_of(entry: Path) -> Path:
        """The store an entry directory (from path_for) lives in: how a builder in a child process,
        given only paths, reaches the store for an artifact every model shares (a compiled tool)."""
        return Path(entry).parent.parent

    def lookup(self, key: str) -> Artifact | None:
        """The built entry under `key` if there is one; never builds (a stored failure is none)."""
        final = self.path_for(key)
        manifest = self._read(final)
        if manifest is None and self._shared_tier():
            try:
                with self._lock(key, DEFAULT_BUILD_TIMEOUT):
                    manifest = self._read(final) or self._fetch(key, final)
            except (RemoteStoreError, StoredBuildError):
                return None  # the caller makes it instead
        return Artifact(key, final, manifest) if manifest and manifest["status"] == "built" else None

    def get_or_build(self, key: str, parts: Mapping[str, Any],
                     build: Callable[[Path], Mapping[str, Any]],
                     build_timeout: float | None = None) -> Artifact:
        """Return the entry for `key`, building it with `build(tmp_dir) -> info` if needed.

        `build` raises StoredBuildError to record a failure (see its details). `build_timeout`: how
        long a build may take, so how long to wait for another process building the same key.
        """
        final = self.path_for(key)
        existing = self._read(final)
        if existing is not None:
            return self._ready(key, final, existing)
        if key in self._remembered:
            earlier = self._remembered[key]
            raise StoredBuildError(f"{earlier} ({earlier.details['remember']})", earlier.details)
        wait = (DEFAULT_BUILD_TIMEOUT if build_timeout is None else build_timeout) + self.lock_margin
        with self._lock(key, wait):
            existing = self._read(final)
            if existing is not None:
                return self._ready(key, final, existing)
            if self._shared_tier():
                try:
                    return self._shared(key, parts, final, build, wait)
                except LeaseTimeout as error:  # as for the local lock: the check fails, saying who
                    raise StoredBuildError(str(error), {"kind": "lock-timeout", "summary": str(error),
                                                        "tail": "", "cache": False}) from None
                except RemoteStoreError as error:
                    self._lose_remote(error)
            return self._build(key, parts, final, build)

    def _shared_tier(self) -> bool:
        return self.remote is not None and self.remote_down is None

    def _lose_remote(self, error: RemoteStoreError) -> None:
        """The shared tier failed mid-run: the rest of the session builds and reads here only (each
        check waiting on a dead endpoint would fail a run whose artifacts are fine)."""
        self.remote_down = str(error)
        self.notices.append(f"the shared store stopped answering; this session continued with the "
                            f"local store {self.root} only: {error}")

    def _shared(self, key: str, parts: Mapping[str, Any], final: Path,
                build: Callable[[Path], Mapping[str, Any]], wait: float) -> Artifact:
        """A local miss with a shared tier: its entry if it has a whole one, else built here under
        the key's lease (or the entry another machine published while this one waited)."""
        assert self.remote is not None
        fetched = self._fetch(key, final)
        if fetched is not None:
            return self._ready(key, final, fetched)

        def published() -> bool:
            found = self.remote.manifest(key) if self.remote else None
            return found is not None and str(found.get("build")) != self._unusable.get(key)
        with self.remote.lease(key, wait, published) as holding:
            if not holding:
                fetched = self._fetch(key, final)
                if fetched is not None:
                    return self._ready(key, final, fetched)
            return self._build(key, parts, final, build)

    def _fetch(self, key: str, final: Path) -> dict[str, Any] | None:
        """The shared tier's entry of `key`, downloaded whole into this store; None when it has none
        this run can use: absent, older than --rebuild, or broken (a file missing or truncated),
        which the next build here replaces."""
        assert self.remote is not None
        manifest = self.remote.manifest(key)
        if manifest is None:
            return None
        if not self._current(manifest, key):
            self._unusable[key] = str(manifest.get("build"))
            return None
        tmp = self._new_tmp(key)
        try:
            problem = self.remote.download(key, manifest, tmp)
            if problem is not None:
                self._unusable[key] = str(manifest.get("build"))
                self.notices.append(f"shared entry {key} was broken ({problem}): built here and "
                                    "published in its place")
                return None
            local = {**{k: v for k, v in manifest.items() if k != "files"},
                     "fetched_from": self.remote.url}
            (tmp / MANIFEST).write_text(json.dumps(local, indent=2, default=str))
            self._install(key, tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    def _new_tmp(self, key: str) -> Path:
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        return tmp

    def _install(self, key: str, tmp: Path, final: Path) -> None:
        """Move a complete entry from `tmp` to `final` (under the key's lock)."""
        if final.exists():  # older than --rebuild, or not an entry (its manifest does not parse)
            trash = self.root / "tmp" / f"{key}.old.{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)

    def _publish(self, key: str, final: Path, manifest: Mapping[str, Any]) -> None:
        """Publish an entry built here; a failure to do so leaves it here only, and the session
        local-only from then on (a notice)."""
        assert self.remote is not None
        try:
            self.remote.publish(key, final, manifest, replace=key in self._unusable)
        except RemoteStoreError as error:
            self._lose_remote(error)

    def _build(self, key: str, parts: Mapping[str, Any], final: Path,
               build: Callable[[Path], Mapping[str, Any]]) -> Artifact:
        self._remove_tmp_of(key)  # under the key's lock: whatever is there, a dead build left
        tmp = self._new_tmp(key)
        started = time.time()
        manifest: dict[str, Any] = {"key": key, "parts": dict(parts), "created": started,
                                    "build": uuid.uuid4().hex}
        failure: StoredBuildError | None = None
        try:
            manifest["info"] = dict(build(tmp))
            manifest["status"] = "built"
        except StoredBuildError as error:
            failure = error
            manifest.update(status="failed", error=str(error), details=error.details)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest["build_seconds"] = round(time.time() - started, 3)
        if failure is not None and not failure.details.get("cache", True):
            shutil.rmtree(tmp, ignore_errors=True)
            if failure.details.get("remember"):
                self._remembered[key] = failure
            raise failure
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        self._install(key, tmp, final)
        if self._shared_tier():
            self._publish(key, final, manifest)
        return self._ready(key, final, {**manifest, "built_now": True})

    def _ready(self, key: str, path: Path, manifest: Mapping[str, Any]) -> Artifact:
        if manifest.get("status") == "failed":
            cached = "" if manifest.get("built_now") else f" ({_stored_note(manifest)})"
            raise StoredBuildError(f"{manifest['error']}{cached}", manifest.get("details", {}))
        return Artifact(key, path, manifest)

    def _read(self, final: Path) -> dict[str, Any] | None:
        """The entry's manifest; None when there is no entry, it is older than `rebuild_before`, or
        its manifest is unreadable or incomplete (the build replaces that directory)."""
        try:
            manifest = json.loads((final / MANIFEST).read_bytes())
        except (OSError, ValueError):  # missing, truncated, not UTF-8: not an entry
            return None
        return manifest if self._current(manifest, final.name) else None

    def _current(self, manifest: Any, key: str) -> bool:
        """Whether a parsed manifest (here or in the shared tier) is `key`'s entry and this run may
        use it: not older than `rebuild_before`."""
        return _valid(manifest, key) and (self.rebuild_before is None
                                          or manifest["created"] >= self.rebuild_before)

    @contextmanager
    def _lock(self, key: str, wait: float) -> Iterator[None]:
        """The key's lock, waited for at most `wait` seconds (polled: flock itself cannot time out).
        The holder writes its pid and host into the lock file, so a waiter that gives up can say
        who holds it."""
        path = self.lock_path(key)
        path.parent.mkdir(exist_ok=True)
        with open(path, "a+") as handle:  # never "w": that would erase the holder's note
            deadline, pause = time.monotonic() + wait, 0.01
            while not _try_lock(handle):
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "a process that has not written its pid yet"
                    raise StoredBuildError(
                        f"gave up after {wait:g} s waiting for the store lock {path} (key {key}), "
                        f"held by {holder}: another process is building this artifact; let it "
                        "finish, stop it, or raise --build-timeout",
                        {"kind": "lock-timeout", "summary": f"store lock {path} held by {holder}",
                         "tail": "", "cache": False})
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                handle.flush()
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _clean_tmp(self) -> None:
        """Remove temporary build folders that a killed run left: those of keys nobody holds the lock
        of (a build runs under its key's lock, and a dead process holds none). Safe across hosts
        and pid namespaces, unlike guessing from a pid; costs one listdir when there are none."""
        tmp_dir = self.root / "tmp"
        if not tmp_dir.is_dir():
            return
        for key in sorted({entry.name.split(".")[0] for entry in tmp_dir.iterdir()} - {""}):
            path = self.lock_path(key)
            path.parent.mkdir(exist_ok=True)
            with open(path, "a+") as handle:
                if _try_lock(handle):
                    try:
                        self._remove_tmp_of(key)
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_tmp_of(self, key: str) -> None:
        """Temporary folders of `key`; only to be called holding its lock."""
        for leftover in (self.root / "tmp").glob(f"{key}.*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _stored_note(manifest: Mapping[str, Any]) -> str:
    """'stored failure from onnx 1.17, onnxruntime 1.20; --rebuild retries': the tool versions in
    the key say which installation failed, so a user who upgraded knows why it is served again."""
    tools = manifest.get("parts", {}).get("tools") or {}
    versions = ", ".join(f"{name} {version}" for name, version in sorted(tools.items()))
    return f"stored failure{f' from {versions}' if versions else ''}; --rebuild retries"
