"""The artifact store: built once, reused warm, safe when two processes race for the same key.

The tests of what a store promises run twice: on a local directory, and on the shared store on a
real S3-compatible server (moto, tests/conftest.py), where each store opened is another machine's
(its own empty local cache), so what it finds it found in S3."""

import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from modelparity.remote_store import RemoteTier
from modelparity.store import ArtifactStore, StoredBuildError, content_key

_caches = itertools.count()


def open_store(kind: str, tmp_path: Path, options: dict | None, rebuild_before: float | None = None
               ) -> ArtifactStore:
    """Store "s" of this test: a directory, or s3://modelparity/TEST/s behind a new local cache."""
    if kind == "local":
        return ArtifactStore(tmp_path / "s", rebuild_before)
    remote = RemoteTier(f"s3://modelparity/{tmp_path.name}/s", options)
    return ArtifactStore(tmp_path / f"cache{next(_caches)}", rebuild_before, remote)


@pytest.fixture(params=["local", "s3"])
def store_kind(request):
    return request.param


@pytest.fixture
def stores(store_kind, tmp_path, request):
    """open_store(rebuild_before=None): a new instance of this test's store, of either kind."""
    options = request.getfixturevalue("s3_server") if store_kind == "s3" else None
    return lambda rebuild_before=None: open_store(store_kind, tmp_path, options, rebuild_before)


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


def test_built_once_then_reused(tmp_path, stores):
    store = stores()
    counter = tmp_path / "count"
    first = store.get_or_build("k1", {"x": 1}, _counting_build(counter))
    second = stores().get_or_build("k1", {"x": 1}, _counting_build(counter))
    assert first.built_now and not second.built_now
    assert (second.path / "model.bin").read_text() == "artifact"
    assert counter.read_text().count("built") == 1


def test_rebuild_before_forces_one_rebuild(tmp_path, stores):
    counter = tmp_path / "count"
    stores().get_or_build("k", {}, _counting_build(counter))
    rebuilding = stores(rebuild_before=time.time() + 1e-3)
    time.sleep(0.01)
    assert rebuilding.get_or_build("k", {}, _counting_build(counter)).built_now
    assert counter.read_text().count("built") == 2
    assert not stores().get_or_build("k", {}, _counting_build(counter)).built_now, "the rebuild replaced it"


def _race(kind: str, tmp_path: str, options, counter: str, barrier) -> None:
    barrier.wait()
    open_store(kind, Path(tmp_path), options).get_or_build("shared", {}, _counting_build(Path(counter),
                                                                                        delay=0.5))


def test_two_processes_racing_build_once(tmp_path, store_kind, stores, request):
    """Locally the key's file lock, on S3 its lease (two machines: two caches) make one build."""
    options = request.getfixturevalue("s3_server") if store_kind == "s3" else None
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_race, args=(store_kind, str(tmp_path), options,
                                                   str(tmp_path / "count"), barrier))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert (tmp_path / "count").read_text().count("built") == 1
    assert not any((tmp_path / "s" / "tmp").glob("*")) and not any(tmp_path.glob("cache*/tmp/*"))
    assert (stores().get_or_build("shared", {}, _counting_build(tmp_path / "count")).path
            / "model.bin").read_text() == "artifact"


def test_failures_are_stored_except_timeouts(tmp_path, stores):
    store = stores()
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
    for reader in (store, stores()):  # another machine is served the failure too
        with pytest.raises(StoredBuildError, match=r"stored failure; --rebuild retries"):
            reader.get_or_build("f", {}, failing(True))
    assert len(calls) == 1
    for _ in range(2):
        with pytest.raises(StoredBuildError):
            store.get_or_build("t", {}, failing(False))
    assert len(calls) == 3


# Builders for the harness-level tests: run isolated, as "this file:function".
HERE = __file__


def write_parent(source, out, params, model):
    (Path(out) / "model.bin").write_text(Path(params["flag"]).read_text())
    return {}


def check_parent(source, out, params, model):
    if (Path(source) / "model.bin").read_text() == "garbage":
        raise ValueError("the parent artifact is garbage")
    (Path(out) / "child.bin").write_text("child")
    return {}


def needs_backend(source, out, params, model):
    if not Path(params["installed"]).exists():
        import modelparity_backend_not_installed  # noqa: F401
    return {"backend": "found"}


def hang(source, out, params, model):
    time.sleep(3600)


_HARNESSES = []


@pytest.fixture(autouse=True)
def _close_harnesses():
    """Each harness's conversion workers end with the test that made it."""
    yield
    while _HARNESSES:
        _HARNESSES.pop().close()


def _harness(store, timeout: float = 60, flag: Path | None = None):
    """A harness with a two-node chain: `parent` writes what the `flag` file says into its artifact,
    `child` fails when that is "garbage"."""
    from modelparity.formats import FormatGraph
    from modelparity.formats.base import Format
    from modelparity.harness import Harness

    graph = FormatGraph([Format("parent", build=f"{HERE}:write_parent", params={"flag": str(flag)}),
                         Format("child", parent="parent", build=f"{HERE}:check_parent")])
    _HARNESSES.append(Harness(graph, store, build_timeout=timeout))
    return _HARNESSES[-1]


def _parent(tmp_path: Path) -> Path:
    """A parent artifact's folder, outside the store (the builder gets a linked copy of it)."""
    parent = tmp_path / "parent"
    parent.mkdir(exist_ok=True)
    return parent


def _node(target: str, params=None):
    from modelparity.formats.base import Format

    return Format("node", build=target, params=params or {})


def _fake_model(store):
    from modelparity.harness import LoadedModel

    return LoadedModel("fake", None, {"name": "fake"}, store.get_or_build("model", {}, lambda out: {}))


@pytest.mark.parametrize("rebuild", [False, True], ids=["warm", "rebuild"])
@pytest.mark.parametrize("manifest", [b'{"key": "k", "status": "bu', b"[]",
                                      b'{"key": "k", "status": "built"}', b"\xff\xfe"],
                         ids=["truncated", "not-a-dict", "no-created", "binary"])
def test_an_entry_whose_manifest_does_not_parse_is_rebuilt(tmp_path, manifest, rebuild):
    counter = tmp_path / "count"
    entry = ArtifactStore(tmp_path / "s").get_or_build("k", {}, _counting_build(counter)).path
    (entry / "artifact.json").write_bytes(manifest)
    (entry / "stale.bin").write_text("half-copied")
    store = ArtifactStore(tmp_path / "s", rebuild_before=time.time() if rebuild else None)
    artifact = store.get_or_build("k", {}, _counting_build(counter))
    assert artifact.built_now and counter.read_text().count("built") == 2
    assert not (entry / "stale.bin").exists(), "the broken directory was replaced, not reused"
    assert not ArtifactStore(tmp_path / "s").get_or_build("k", {}, _counting_build(counter)).built_now
    assert not list((tmp_path / "s" / "tmp").iterdir())


def test_a_rebuilt_parent_gives_its_children_new_keys(tmp_path):
    """A child built from a garbage parent failed (stored); rebuilding only the parent
    (--rebuild --formats parent) must not leave the child served as that stored failure."""
    from modelparity.harness import BuildRecord

    flag = tmp_path / "flag"
    flag.write_text("garbage")
    store = ArtifactStore(tmp_path / "s")
    model = _fake_model(store)
    with pytest.raises(StoredBuildError, match="the parent artifact is garbage"):
        _harness(store, flag=flag).artifact(model, "parent-child", BuildRecord())
    flag.write_text("good")
    rebuilt = _harness(ArtifactStore(tmp_path / "s", rebuild_before=time.time()), flag=flag).artifact(
        model, "parent", BuildRecord())
    assert rebuilt.built_now
    child = _harness(ArtifactStore(tmp_path / "s"), flag=flag).artifact(model, "parent-child",
                                                                          BuildRecord())
    assert child.built_now and (child.path / "child.bin").read_text() == "child"


def test_an_import_error_of_the_backend_is_not_stored(tmp_path):
    installed = tmp_path / "installed"
    store = ArtifactStore(tmp_path / "s")
    build = _harness(store)._builder(_node(f"{HERE}:needs_backend", {"installed": str(installed)}),
                                     _parent(tmp_path), tmp_path)
    with pytest.raises(StoredBuildError, match="modelparity_backend_not_installed") as error:
        store.get_or_build("needs", {}, build)
    assert error.value.details["kind"] == "import"
    installed.write_text("pip install done")
    artifact = ArtifactStore(tmp_path / "s").get_or_build("needs", {}, build)
    assert artifact.built_now and artifact.manifest["info"] == {"backend": "found"}


def test_a_stored_failure_names_the_tool_versions_that_produced_it(tmp_path, stores):
    parts = {"tools": {"onnxruntime": "1.20.1", "onnx": "1.17.0"}}

    def failing(out):
        raise StoredBuildError("converter exploded", {"kind": "raised"})

    with pytest.raises(StoredBuildError):
        stores().get_or_build("f", parts, failing)
    with pytest.raises(StoredBuildError) as error:
        stores().get_or_build("f", parts, failing)
    assert str(error.value).endswith(
        "(stored failure from onnx 1.17.0, onnxruntime 1.20.1; --rebuild retries)")


def test_a_timeout_fails_later_checks_of_the_session_at_once(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    build = _harness(store, timeout=1)._builder(_node(f"{HERE}:hang"), _parent(tmp_path), tmp_path)
    with pytest.raises(StoredBuildError, match="did not finish within 1 s"):
        store.get_or_build("slow", {}, build)
    started = time.monotonic()
    with pytest.raises(StoredBuildError, match=r"did not finish within 1 s(.|\n)*timed out earlier in "
                                               "this session") as error:
        store.get_or_build("slow", {}, build)
    assert time.monotonic() - started < 0.5
    assert error.value.details["kind"] == "timeout"
    assert not store.path_for("slow").exists(), "a timeout is not stored"


def test_a_timeout_is_stored_when_asked(tmp_path):
    """--store-timeouts: a later run (a new store instance) fails at once with the stored timeout."""
    harness = _harness(ArtifactStore(tmp_path / "s"), timeout=1)
    harness.store_timeouts = True
    build = harness._builder(_node(f"{HERE}:hang"), _parent(tmp_path), tmp_path)
    with pytest.raises(StoredBuildError, match="did not finish within 1 s"):
        harness.store.get_or_build("slow", {}, build)
    started = time.monotonic()
    with pytest.raises(StoredBuildError, match="stored failure"):
        ArtifactStore(tmp_path / "s").get_or_build("slow", {}, build)
    assert time.monotonic() - started < 0.5


def _hold_lock(root: str, key: str, ready, release) -> None:
    """A process building `key` until `release` is set."""
    def build(out: Path):
        ready.set()
        release.wait(30)
        return {}

    ArtifactStore(Path(root)).get_or_build(key, {}, build)


def test_a_lock_wait_is_bounded_and_names_the_holder(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path / "s"), "busy", ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        store = ArtifactStore(tmp_path / "s")
        store.lock_margin = 0.0
        started = time.monotonic()
        with pytest.raises(StoredBuildError) as error:
            store.get_or_build("busy", {}, _counting_build(tmp_path / "count"), build_timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 2
        message = str(error.value)
        assert str(tmp_path / "s" / "locks" / "busy.lock") in message and "(key busy)" in message
        assert f"pid {holder.pid} on " in message
        assert not (tmp_path / "count").exists()
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0


def test_temporary_folders_of_dead_builds_are_removed_at_open(tmp_path):
    import fcntl

    tmp = tmp_path / "s" / "tmp"
    for name in ("dead.99999999.0badc0de", "dead.old.0badc0de", "busy.1.0badc0de"):
        (tmp / name).mkdir(parents=True)
        (tmp / name / "model.bin").write_text("partial")
    (tmp_path / "s" / "locks").mkdir()
    with open(tmp_path / "s" / "locks" / "busy.lock", "a+") as held:  # a live build of "busy"
        fcntl.flock(held, fcntl.LOCK_EX)
        ArtifactStore(tmp_path / "s")
    assert sorted(p.name for p in tmp.iterdir()) == ["busy.1.0badc0de"]
    ArtifactStore(tmp_path / "s").get_or_build("busy", {}, _counting_build(tmp_path / "count"))
    assert not list(tmp.iterdir())
