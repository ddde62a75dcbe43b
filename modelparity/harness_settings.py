"""What a harness is made from, as plain data: the pytest session makes its harness from these, and
so does each Ray worker that runs the session's checks (modelparity.ray_executor), so both judge
with the same formats, store, timeouts and noise floors."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelparity.checks.noise_floor import FloorFile
from modelparity.formats import FormatGraph, build_graph
from modelparity.harness import Harness
from modelparity.remote_store import RemoteTier, cache_folder
from modelparity.store import ArtifactStore


@dataclass(frozen=True)
class HarnessSettings:
    """`store`: the local store (with `store_url`, its cache) on `host`, the machine that resolved
    the settings; a harness on another machine caches the shared store in its own folder."""

    opsets: tuple[int, ...]
    plugins: tuple[str, ...]
    store: Path
    store_url: str | None
    store_options: dict[str, Any]
    rebuild_before: float | None
    build_timeout: float
    providers: frozenset[str] = frozenset()
    require_gpu: bool = False
    strict_informative: bool = False
    store_timeouts: bool = False
    isolate_runtimes: frozenset[str] | None = None  # None: the harness's default
    floor_file: Path | None = None
    inputs_dir: Path | None = None
    host: str = field(default_factory=socket.gethostname)

    def store_here(self) -> ArtifactStore:
        """The store as this machine opens it."""
        remote = RemoteTier(self.store_url, self.store_options) if self.store_url else None
        root = self.store
        if socket.gethostname() != self.host:
            if remote is None:
                raise ValueError(f"the artifact store is the folder {self.store} on {self.host}, which "
                                 f"{socket.gethostname()} cannot see: give checks that run on other "
                                 "machines a shared store (--store s3://bucket/prefix)")
            root = (Path.home() / ".cache" / "modelparity" / "store-cache"
                    / cache_folder(self.store_url, self.store_options))
        return ArtifactStore(root, self.rebuild_before, remote)


def open_harness(settings: HarnessSettings, graph: FormatGraph | None = None) -> Harness:
    """A harness for `settings`: its format graph (built here unless given), store and policies.
    Raises what build_graph, RemoteTier and FloorFile raise (bad plugins, a store URL that fsspec
    cannot open, a floor file that is not JSON: json.JSONDecodeError)."""
    if graph is None:
        graph = build_graph({"opsets": list(settings.opsets)}, list(settings.plugins))
        if settings.providers:
            graph.providers = settings.providers
    harness = Harness(graph, settings.store_here(), settings.build_timeout)
    harness.require_gpu = settings.require_gpu
    harness.strict_informative = settings.strict_informative
    harness.store_timeouts = settings.store_timeouts
    if settings.isolate_runtimes is not None:
        harness.isolate_runtimes = settings.isolate_runtimes
    here = socket.gethostname() == settings.host
    # the report's folders and the committed floors are the resolving machine's files: elsewhere,
    # no inputs are saved for repro commands, and the noise floors are measured there
    harness.inputs_dir = settings.inputs_dir if here else None
    if settings.floor_file is not None and here:
        harness.floor_file = FloorFile(settings.floor_file)
    return harness
