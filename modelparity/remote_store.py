"""The artifact store's shared tier: entries published to object storage (any fsspec URL: s3://,
gs://, file:// on a shared mount), so that machines of one grid build each artifact once.

The local store (modelparity.store) stays in front of it as the cache every runner reads and writes;
this tier holds the same entries under the same content keys, laid out so that a reader never sees
a partial one:

  URL/objects/KEY/BUILD/FILE    an entry's files, uploaded first, under the build's own id, so two
                                publishers of one key never write over each other's files
  URL/entries/KE/KEY.json       its manifest, written last in one PUT (atomic on object storage):
                                the entry exists once this exists, and it lists every file with its
                                size, SHA-256 and mode (and its empty folders), so a
                                truncated upload is found and rebuilt
  URL/leases/KEY.json           who is building KEY now, created exclusively (S3's If-None-Match),
                                so a second machine waits for the first instead of building again

A stored failure is published like any entry (its manifest and build log), so a grid does not repeat
a slow failure either. Its holder renews the lease while it builds and uploads; a builder killed
on another machine stops renewing, and its lease is taken over LEASE_TERM after the last renewal
(on the builder's own host at once), not after the whole build timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "artifact.json"
LEASE_POLL = 0.5  # seconds between a waiter's looks at the lease and the manifest
LEASE_SETTLE = 1.0  # seconds a taker of a dead builder's lease waits before reading back who won
LEASE_TERM = 120.0  # seconds a lease lasts unrenewed: well above clock skew between CI machines
LEASE_RENEW = 20.0  # seconds between its holder's renewals


class RemoteStoreError(RuntimeError):
    """The shared store cannot be reached or written: names the URL and what to check."""


class LeaseTimeout(RemoteStoreError):
    """Another machine held the key's lease for longer than this one waits."""


def is_url(location: str) -> bool:
    """Whether a --store value is an fsspec URL (s3://bucket/prefix) rather than a directory."""
    return "://" in location


def cache_folder(url: str, options: Mapping[str, Any]) -> str:
    """The name of a store URL's local cache folder: one per URL and endpoint (one bucket name on
    two servers is two stores), so an entry taken from one is never counted as another's."""
    return hashlib.sha1(f"{url} {options.get('endpoint_url', '')}".encode()).hexdigest()[:12]


def _dead(holder: Mapping[str, Any]) -> bool:
    """Whether a lease's holder is gone: past its expiry, or a process of this host that is not
    running (a kill -9 on the same machine is seen at once)."""
    if holder.get("expires", 0) < time.time():
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def safe_name(name: str) -> bool:
    """Whether a manifest's file name stays inside the entry (no absolute path, no '..')."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RemoteTier:
    """The entries under one URL. `options`: the fsspec filesystem's arguments ([tool.modelparity]
    store_options, e.g. {endpoint_url = "http://127.0.0.1:9000"} for an S3-compatible server;
    credentials come from the usual places, such as AWS_ACCESS_KEY_ID or ~/.aws)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        try:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem
        except ImportError as error:
            raise RemoteStoreError(f"--store {url}: fsspec is not installed (pip install "
                                   "'modelparity[distributed]')") from error
        self.url = url.rstrip("/")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **dict(options or {}))
        except (ImportError, ValueError) as error:
            raise RemoteStoreError(f"--store {url}: {error} (for s3:// install s3fs: pip install "
                                   "'modelparity[distributed]'; gs:// needs gcsfs)") from error
        self.local = isinstance(self.fs, LocalFileSystem)
        self.host = f"{socket.gethostname()} pid {os.getpid()}"

    def _path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def manifest_path(self, key: str) -> str:
        return self._path("entries", key[:2], f"{key}.json")

    def lease_path(self, key: str) -> str:
        return self._path("leases", f"{key}.json")

    def object_path(self, key: str, build: str, name: str) -> str:
        return self._path("objects", key, build, name)

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The published manifest of `key`; None when there is none, {} when it does not parse (or
        lists no files): not an entry, and the next build replaces it."""
        try:
            blob = self._call(self.fs.cat_file, self.manifest_path(key))
        except FileNotFoundError:
            return None
        try:
            found = json.loads(blob)
        except ValueError:
            return {}
        return found if isinstance(found, dict) and isinstance(found.get("files"), dict) else {}

    def download(self, key: str, manifest: Mapping[str, Any], into: Path) -> str | None:
        """The entry's files into `into`; None when they all arrived whole, else what is wrong (a
        file missing, shorter or different from its manifest: an upload that did not finish)."""
        for name, expected in sorted(manifest["files"].items()):
            if not safe_name(name) or not isinstance(expected, dict):
                return f"its manifest names the file {name!r}, outside the entry: not an entry"
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = self.object_path(key, str(manifest["build"]), name)
            try:
                self._call(self.fs.get_file, source, str(target))
            except FileNotFoundError:
                return f"{source} is missing"
            size = target.stat().st_size
            if size != expected.get("size") or file_digest(target) != expected.get("sha256"):
                return (f"{source} has {size} bytes, its manifest says {expected.get('size')} with "
                        "another digest: a truncated or overwritten upload")
            if isinstance(expected.get("mode"), int):
                target.chmod(expected["mode"] & 0o777)
        for name in manifest.get("empty_folders", []):
            if not isinstance(name, str) or not safe_name(name):
                return f"its manifest names the folder {name!r}, outside the entry: not an entry"
            (into / name).mkdir(parents=True, exist_ok=True)
        return None

    def publish(self, key: str, directory: Path, manifest: Mapping[str, Any], replace: bool) -> bool:
        """Upload the entry in `directory`, then its manifest. `replace`: over an entry this run
        does not use (older than --rebuild, broken); otherwise the first publisher wins and this
        returns False (the files uploaded under this build's id stay unreferenced)."""
        build = str(manifest["build"])
        files = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
            name = path.relative_to(directory).as_posix()
            if self.local:
                Path(self.object_path(key, build, name)).parent.mkdir(parents=True, exist_ok=True)
            self._call(self.fs.put_file, str(path), self.object_path(key, build, name))
            files[name] = {"size": path.stat().st_size, "sha256": file_digest(path),
                           "mode": path.stat().st_mode & 0o777}  # a compiled program stays executable
        # object storage has no folders: an empty one (a SavedModel's assets/, a plugin's cache
        # folder its loader expects) is named in the manifest and made again on download
        empty = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                       if p.is_dir() and not any(p.iterdir()))
        published = {**{k: v for k, v in manifest.items() if k != "built_now"}, "files": files,
                     "empty_folders": empty, "published": time.time(), "published_by": self.host}
        return self._write(self.manifest_path(key), json.dumps(published, default=str).encode(),
                           exclusive=not replace)

    @contextmanager
    def lease(self, key: str, wait: float, published: Callable[[], bool]) -> Iterator[bool]:
        """Hold the key's lease while building (yields True; renewed every LEASE_RENEW seconds
        meanwhile), or yield False as soon as another holder has published the entry. A lease past
        its expiry, or held by a process of this host that is gone, is a dead builder's: taken over
        by overwriting it with this one's token and reading it back after LEASE_SETTLE (of two
        takers, the later write holds it). Gives up with an error naming the holder after `wait`
        seconds."""
        path, deadline = self.lease_path(key), time.monotonic() + wait
        token, since = uuid.uuid4().hex, time.time()

        def note() -> bytes:
            return json.dumps({"holder": self.host, "host": socket.gethostname(), "pid": os.getpid(),
                               "token": token, "since": since,
                               "expires": time.time() + LEASE_TERM}).encode()
        holding = self._write(path, note(), exclusive=True)
        while not holding:
            if published():
                yield False
                return
            holder = self._lease_holder(path)
            if holder is not None and _dead(holder):
                self._write(path, note(), exclusive=False)
                time.sleep(LEASE_SETTLE)
                holding = (self._lease_holder(path) or {}).get("token") == token
                continue
            if time.monotonic() >= deadline:
                since = time.strftime("%H:%M:%S UTC", time.gmtime(holder.get("since", 0) if holder else 0))
                who = f"{holder.get('holder')} (since {since})" if holder else "another machine"
                raise LeaseTimeout(
                    f"gave up after {wait:g} s waiting for the lease {self.url}/leases/{key}.json: {who} "
                    "is building this artifact; let it finish, or raise --build-timeout")
            time.sleep(LEASE_POLL)
            holding = self._write(path, note(), exclusive=True)
        if published():  # its holder published and released it between this one's looks
            self._release(path, token)
            yield False
            return
        done = threading.Event()
        renewing = threading.Thread(target=self._renew, args=(path, token, note, done), daemon=True,
                                    name=f"modelparity-lease-{key[:8]}")
        renewing.start()
        try:
            yield True
        finally:
            done.set()
            renewing.join()
            self._release(path, token)

    def _release(self, path: str, token: str) -> None:
        if (self._lease_holder(path) or {}).get("token") == token:  # not a taker's since
            self._remove(path)

    def _renew(self, path: str, token: str, note: Callable[[], bytes], done: threading.Event) -> None:
        """Push the held lease's expiry on until `done`; stop if another machine took it over (this
        one took too long to renew). A renewal that fails is tried again at the next one: the build
        goes on, and at worst a waiter takes the lease and builds too (the first publication wins)."""
        while not done.wait(LEASE_RENEW):
            try:
                if (self._lease_holder(path) or {}).get("token") != token:
                    return
                self._write(path, note(), exclusive=False)
            except (RemoteStoreError, OSError):
                continue

    def check_access(self) -> None:
        """Write, read and delete a probe under the URL: a missing bucket, wrong credentials or a
        read-only store fail here, once, before any check, instead of in each build."""
        probe = self._path("probes", f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
        try:
            if not self._write(probe, b"modelparity", exclusive=False) or \
                    self._call(self.fs.cat_file, probe) != b"modelparity":
                raise RemoteStoreError(f"artifact store {self.url}: a probe written to {probe} did not "
                                       "read back the same")
            self._remove(probe)
        except FileNotFoundError as error:
            raise RemoteStoreError(f"artifact store {self.url}: {error} (does the bucket exist? create "
                                   "it, or fix the URL)") from error

    def _lease_holder(self, path: str) -> dict[str, Any] | None:
        try:
            found = json.loads(self._call(self.fs.cat_file, path))
        except (FileNotFoundError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def _write(self, path: str, blob: bytes, exclusive: bool) -> bool:
        """Write `blob` at `path` in one step (False when `exclusive` and it exists). On a local or
        mounted file system, a temporary file renamed (or linked, when exclusive) into place; on
        object storage one PUT, with If-None-Match when exclusive."""
        if self.local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
            partial.write_bytes(blob)
            try:
                if not exclusive:
                    partial.replace(target)
                    return True
                try:
                    os.link(partial, target)
                except FileExistsError:
                    return False
                return True
            finally:
                partial.unlink(missing_ok=True)
        try:
            self._call(self.fs.pipe_file, path, blob, mode="create" if exclusive else "overwrite")
        except FileExistsError:
            return False
        except RemoteStoreError as error:  # S3's 409: a concurrent conditional write, which won
            if exclusive and "ConditionalRequestConflict" in str(error.__cause__):
                return False
            raise
        return True

    def _remove(self, path: str) -> None:
        try:
            self._call(self.fs.rm_file, path)
        except FileNotFoundError:
            pass

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """An fsspec call, its connection and permission errors said with the URL and the fix."""
        try:
            return operation(*args, **kwargs)
        except FileExistsError:
            raise
        except FileNotFoundError as error:
            if "bucket" in str(error).lower():  # s3fs says NoSuchBucket as FileNotFoundError
                raise RemoteStoreError(f"artifact store {self.url}: {error}; create the bucket or fix "
                                       "the URL") from error
            raise
        except Exception as error:  # botocore's and aiohttp's own errors are not OSErrors
            raise RemoteStoreError(
                f"artifact store {self.url}: {type(error).__name__}: {error}; check the URL, the "
                "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws for s3://) and "
                "[tool.modelparity] store_options (e.g. endpoint_url)") from error
