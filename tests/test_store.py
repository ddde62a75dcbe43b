"""The artifact store: built once, reused warm, safe when two processes race for the same key."""

import multiprocessing
import time
from pathlib import Path

import pytest

from modelparity.store import ArtifactStore, StoredBuildError, content_key


def _counting_build(counter: Path, delay: float = 0.0):
    def build(out: Path):
        with open(counter, "a") as handle:
            handle.write("built\n")
        time.sleep(delay)
        (out / "model.bin").write_text("artifact")
        return {"size": 8}
    return build


def test_key_is_stable_and_order_independent():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_built_once_then_reused(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    counter = tmp_path / "count"
    first = store.get_or_build("k1", {"x": 1}, _counting_build(counter))
    second = ArtifactStore(tmp_path / "store").get_or_build("k1", {"x": 1}, _counting_build(counter))
    assert first.built_now and not second.built_now
    assert (second.path / "model.bin").read_text() == "artifact"
    assert counter.read_text().count("built") == 1


def test_rebuild_before_forces_one_rebuild(tmp_path):
    counter = tmp_path / "count"
    ArtifactStore(tmp_path / "s").get_or_build("k", {}, _counting_build(counter))
    rebuilding = ArtifactStore(tmp_path / "s", rebuild_before=time.time() + 1e-3)
    time.sleep(0.01)
    assert rebuilding.get_or_build("k", {}, _counting_build(counter)).built_now
    assert counter.read_text().count("built") == 2


def _race(root: str, counter: str, barrier) -> None:
    barrier.wait()
    ArtifactStore(Path(root)).get_or_build("shared", {}, _counting_build(Path(counter), delay=0.5))


def test_two_processes_racing_build_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_race, args=(str(tmp_path / "s"), str(tmp_path / "count"), barrier))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert (tmp_path / "count").read_text().count("built") == 1
    assert not list((tmp_path / "s" / "tmp").iterdir())


def test_failures_are_stored_except_timeouts(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    calls = []

    def failing(cache):
        def build(out):
            calls.append(1)
            raise StoredBuildError("converter exploded", {"kind": "raised", "cache": cache})
        return build

    for _ in range(2):
        with pytest.raises(StoredBuildError, match="converter exploded"):
            store.get_or_build("f", {}, failing(True))
    assert len(calls) == 1
    with pytest.raises(StoredBuildError, match=r"stored failure; --rebuild retries"):
        store.get_or_build("f", {}, failing(True))
    for _ in range(2):
        with pytest.raises(StoredBuildError):
            store.get_or_build("t", {}, failing(False))
    assert len(calls) == 3
