"""A selection's artifacts made before its checks run: a tree of conversions per model, walked in
parallel with a node started as soon as its parent is made, one line of progress per conversion.

Why before, and not inside each check: the checks of one format wait on one conversion each, in
the order pytest runs them, so two cores convert one thing at a time; the tree is known once the
items are collected. What the walk finds in the store costs a manifest read. A failure stays with
the harness (Harness.node_artifact keeps it for the session), so the checks report it in their own
words, and a failed node's children are never attempted; so does a model whose factory fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from modelparity.formats.base import Format
from modelparity.store import Artifact

if TYPE_CHECKING:
    from modelparity.harness import Harness, LoadedModel


class Prebuild:
    """One walk: `run(wanted)` returns when every wanted node is made or has failed."""

    def __init__(self, harness: Harness, parallel: int, progress: Callable[[str], None]) -> None:
        self.harness = harness
        self.parallel = parallel
        self.progress = progress
        self.counts = {"built": 0, "stored": 0, "failed": 0}
        self._children: dict[tuple[str, str | None], list[Format]] = {}
        self._models: dict[str, LoadedModel] = {}
        self._running: dict[Future[Artifact | None], tuple[str, Format]] = {}  # submitted
        self._converting: set[tuple[str, str]] = set()  # (model name, node id) in a worker now
        self._lock = threading.Lock()

    def run(self, wanted: list[tuple[str, str]]) -> None:
        for reference, format_id in wanted:
            try:
                self._models[reference] = self.harness.model(reference)
            except Exception:  # the checks of this model report why (SpecError, BadReference...)
                continue
            for node in self.harness.graph.chain(format_id):
                siblings = self._children.setdefault((reference, node.parent), [])
                if node not in siblings:
                    siblings.append(node)
        total = sum(1 for nodes in self._children.values() for node in nodes if node.build)
        started = time.perf_counter()
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="modelparity-build") as pool:
            for reference, model in self._models.items():
                self._start(pool, reference, None, model.artifact)
            while self._running:
                done, _ = wait(self._running, return_when=FIRST_COMPLETED)
                for task in done:
                    reference, node = self._running.pop(task)
                    made = task.result()
                    if node.build is not None:
                        self._report(reference, node, made, total, started)
                    if made is not None:  # a failed node's children are not attempted
                        self._start(pool, reference, node.id, made)
        if self.counts["built"] or self.counts["failed"]:
            self.progress(f"artifacts ready in {time.perf_counter() - started:.1f} s: "
                          f"{self.counts['built']} built now, {self.counts['stored']} from the store, "
                          f"{self.counts['failed']} failed ({self.parallel} at a time)")

    def _start(self, pool: ThreadPoolExecutor, reference: str, parent: str | None,
               source: Artifact) -> None:
        for node in self._children.get((reference, parent), []):
            task = pool.submit(self._make, self._models[reference], node, source)
            self._running[task] = (reference, node)

    def _make(self, model: LoadedModel, node: Format, source: Artifact) -> Artifact | None:
        """The node's artifact (its parent's, for a node that builds nothing: a runner over its
        parent's file); None when it failed. Never raises: an error that is not a conversion's
        (a bug, a full disk) is left for the check that needs the node, which reports it."""
        if node.build is None:
            return source
        chain = self.harness.graph.chain(node.id)
        with self._lock:
            self._converting.add((model.spec.name, node.id))
        try:
            return self.harness.node_artifact(model, chain, len(chain) - 1, source)
        except Exception:  # StoredBuildError (kept by the harness), or what the check will meet
            return None
        finally:
            with self._lock:
                self._converting.discard((model.spec.name, node.id))

    def _report(self, reference: str, node: Format, made: Artifact | None, total: int,
                started: float) -> None:
        kind = "failed" if made is None else "built" if made.built_now else "stored"
        self.counts[kind] += 1
        if kind == "stored":
            return
        with self._lock:
            busy = ", ".join(f"{name} {node_id}" for name, node_id in sorted(self._converting))
        took = f" in {made.manifest.get('build_seconds', 0.0):.1f} s" if made else ""
        self.progress(f"[{sum(self.counts.values())}/{total}] {kind} {self._models[reference].spec.name} "
                      f"{node.id}{took}; running: {busy or 'nothing'}; "
                      f"{time.perf_counter() - started:.0f} s elapsed")
