"""The shared store on a real S3-compatible server (moto on 127.0.0.1, tests/conftest.py): what
object storage adds to the local store's promises. A reader never takes a partial entry (a truncated
upload, files without their manifest, a manifest that does not parse: each rebuilt and replaced),
two publishers of one key leave one whole entry, a dead builder's lease is taken over, and an
unreachable store fails the build naming the URL instead of hanging or passing."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from modelparity.remote_store import RemoteStoreError, RemoteTier
from modelparity.store import ArtifactStore, StoredBuildError


def _build(counter: Path, content: str = "artifact"):
    def build(out: Path):
        with open(counter, "a") as handle:
            handle.write("built\n")
        (out / "model.bin").write_text(content * 1000)
        (out / "nested").mkdir()
        (out / "nested" / "weights.bin").write_bytes(b"\0" * 4096)
        return {}
    return build


@pytest.fixture
def shared(s3_server, tmp_path, request):
    """machine(): a store on this test's S3 prefix behind a new local cache (another machine)."""
    url = f"s3://modelparity/{request.node.name.replace('[', '-').strip(']')}"
    caches = iter(range(1000))
    return lambda **kw: ArtifactStore(tmp_path / f"cache{next(caches)}", kw.get("rebuild_before"),
                                      RemoteTier(url, s3_server))


def _built(counter: Path) -> int:
    return counter.read_text().count("built") if counter.exists() else 0


def test_a_truncated_upload_is_not_served_and_is_replaced(shared, tmp_path):
    counter = tmp_path / "count"
    first = shared()
    entry = first.get_or_build("k", {}, _build(counter))
    tier = first.remote
    manifest = tier.manifest("k")
    path = tier.object_path("k", manifest["build"], "model.bin")
    tier.fs.pipe_file(path, tier.fs.cat_file(path)[:100])  # the upload stopped after 100 bytes
    reader = shared()
    rebuilt = reader.get_or_build("k", {}, _build(counter))
    assert rebuilt.built_now and _built(counter) == 2
    assert "truncated" in reader.notices[0] and "published in its place" in reader.notices[0]
    assert tier.manifest("k")["build"] != manifest["build"], "the broken entry was replaced"
    third = shared().get_or_build("k", {}, _build(counter))
    assert not third.built_now
    assert (third.path / "model.bin").read_text() == (entry.path / "model.bin").read_text()


@pytest.mark.parametrize("damage", ["no-manifest", "unparsable-manifest"])
def test_files_without_a_whole_manifest_are_no_entry(shared, tmp_path, damage):
    """A publisher killed between its files and its manifest, or a manifest cut short."""
    counter = tmp_path / "count"
    tier = shared().remote
    tier.fs.pipe_file(tier.object_path("k", "deadbuild", "model.bin"), b"half")
    if damage == "unparsable-manifest":
        tier.fs.pipe_file(tier.manifest_path("k"), b'{"key": "k", "status": "bu')
    assert shared().get_or_build("k", {}, _build(counter)).built_now
    assert tier.manifest("k")["status"] == "built", "the broken manifest was replaced"
    assert not shared().get_or_build("k", {}, _build(counter)).built_now and _built(counter) == 1


def _publish(url: str, options: dict, directory: str, barrier) -> None:
    tier = RemoteTier(url, options)
    manifest = json.loads((Path(directory) / "artifact.json").read_text())
    barrier.wait()
    tier.publish("k", Path(directory), manifest, replace=False)


def _read_while_racing(url: str, options: dict, cache: str, seen: str, stop) -> None:
    """A third machine reading the key over and over while two publish it."""
    while not stop.is_set():
        store = ArtifactStore(Path(cache) / str(time.monotonic_ns()), None, RemoteTier(url, options))
        artifact = store.lookup("k")
        if artifact is not None:
            with open(seen, "a") as handle:
                handle.write((artifact.path / "model.bin").read_text()[:1] + "\n")


def test_two_publishers_racing_leave_one_whole_entry(s3_server, tmp_path):
    """No lease here: both publish the same key at once (their files differ, as two builds of a
    nondeterministic converter do). The first manifest wins; every reader gets one whole build."""
    url = "s3://modelparity/publish-race"
    directories = []
    for name in "AB":
        store = ArtifactStore(tmp_path / f"builder{name}")
        entry = store.get_or_build("k", {}, _build(tmp_path / "count", content=name * 5000))
        directories.append(str(entry.path))
    context = multiprocessing.get_context("spawn")
    barrier, stop = context.Barrier(2), context.Event()
    reader = context.Process(target=_read_while_racing,
                             args=(url, s3_server, str(tmp_path / "readers"), str(tmp_path / "seen"), stop))
    reader.start()
    publishers = [context.Process(target=_publish, args=(url, s3_server, d, barrier)) for d in directories]
    for process in publishers:
        process.start()
    for process in publishers:
        process.join(60)
        assert process.exitcode == 0
    time.sleep(1.0)
    stop.set()
    reader.join(60)
    tier = RemoteTier(url, s3_server)
    winner = tier.manifest("k")
    assert tier.download("k", winner, tmp_path / "check") is None, "the published entry is whole"
    content = (tmp_path / "check" / "model.bin").read_text()
    assert content in ("A" * 5000 * 1000, "B" * 5000 * 1000)
    seen = set((tmp_path / "seen").read_text().split())
    assert seen == {content[0]}, "every reader saw the winner, whole, and nothing else"


def test_a_dead_builders_lease_is_taken_over(shared, tmp_path):
    store = shared()
    store.remote.fs.pipe_file(store.remote.lease_path("k"), json.dumps(
        {"holder": "a killed machine", "since": time.time() - 100, "expires": time.time() - 1}).encode())
    assert store.get_or_build("k", {}, _build(tmp_path / "count")).built_now
    assert not store.remote.fs.exists(store.remote.lease_path("k")), "the lease is released"


def test_a_live_lease_is_waited_for_with_the_holder_named(shared, tmp_path):
    store = shared()
    store.remote.fs.pipe_file(store.remote.lease_path("k"), json.dumps(
        {"holder": "runner-7 pid 42", "since": time.time(), "expires": time.time() + 600}).encode())
    with pytest.raises(StoredBuildError, match=r"runner-7 pid 42 \(since .* UTC\) is building this artifact"):
        store.get_or_build("k", {}, _build(tmp_path / "count"), build_timeout=0.5 - store.lock_margin)
    assert not (tmp_path / "count").exists()


DEAD = {"endpoint_url": "http://127.0.0.1:9", "key": "x", "secret": "y",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}


def test_an_unreachable_store_is_refused_before_any_check(s3_server):
    with pytest.raises(RemoteStoreError, match=r"artifact store s3://nowhere/store: .*endpoint_url"):
        RemoteTier("s3://nowhere/store", DEAD).check_access()
    with pytest.raises(RemoteStoreError, match=r"s3://nosuchbucket/x: .*bucket"):
        RemoteTier("s3://nosuchbucket/x", s3_server).check_access()
    RemoteTier("s3://modelparity/access", s3_server).check_access()


def test_a_store_lost_mid_run_leaves_the_session_local(shared, tmp_path):
    """The endpoint stops answering: one notice, and every later artifact is built and read here
    (an artifact built before is still served), instead of every check failing on the dead store."""
    store = shared()
    assert store.get_or_build("before", {}, _build(tmp_path / "count")).built_now
    store.remote = RemoteTier("s3://nowhere/store", DEAD)
    assert not store.get_or_build("before", {}, _build(tmp_path / "count")).built_now
    assert store.get_or_build("after", {}, _build(tmp_path / "count")).built_now
    assert store.get_or_build("again", {}, _build(tmp_path / "count")).built_now
    assert len(store.notices) == 1 and "continued with the local store" in store.notices[0]
    assert store.lookup("unknown") is None


def test_a_manifest_naming_a_file_outside_the_entry_is_no_entry(shared, tmp_path):
    store = shared()
    store.get_or_build("k", {}, _build(tmp_path / "count"))
    manifest = store.remote.manifest("k")
    escape = "../../../../../../" + str(tmp_path / "escaped.txt").lstrip("/")
    manifest["files"] = {escape: {"size": 4, "sha256": "0" * 64}}
    store.remote.fs.pipe_file(store.remote.manifest_path("k"), json.dumps(manifest).encode())
    store.remote.fs.pipe_file(store.remote.object_path("k", manifest["build"], escape), b"evil")
    reader = shared()
    assert reader.get_or_build("k", {}, _build(tmp_path / "count")).built_now
    assert not (tmp_path / "escaped.txt").exists() and "outside the entry" in reader.notices[0]


def test_the_lease_of_a_dead_process_of_this_host_is_taken_at_once(shared, tmp_path):
    """kill -9 of a builder: its lease names its host and pid, so this host need not wait it out."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    store = shared()
    store.remote.fs.pipe_file(store.remote.lease_path("k"), json.dumps(
        {"holder": "killed", "host": socket.gethostname(), "pid": int(gone), "token": "old",
         "since": time.time(), "expires": time.time() + 600}).encode())
    started = time.monotonic()
    assert store.get_or_build("k", {}, _build(tmp_path / "count")).built_now
    assert time.monotonic() - started < 10


def test_a_file_url_is_a_shared_store_too(tmp_path):
    """file:// (a mount every machine sees): the same layout, written with renames and links."""
    url = f"file://{tmp_path / 'shared'}"
    first = ArtifactStore(tmp_path / "a", None, RemoteTier(url))
    assert first.get_or_build("k", {}, _build(tmp_path / "count")).built_now
    assert (tmp_path / "shared" / "entries" / "k" / "k.json").is_file()
    second = ArtifactStore(tmp_path / "b", None, RemoteTier(url))
    assert not second.get_or_build("k", {}, _build(tmp_path / "count")).built_now
    assert second.get_or_build("k", {}, _build(tmp_path / "count")).manifest["fetched_from"] == url


def test_an_unknown_protocol_says_what_to_install():
    with pytest.raises(RemoteStoreError, match="--store nosuch://x"):
        RemoteTier("nosuch://x")


def test_a_fetched_program_stays_executable(shared, tmp_path):
    """A compiled program (the LibTorch C++ runner) in an entry runs where the entry is fetched."""
    def build(out: Path):
        program = out / "program"
        program.write_text("#!/bin/sh\necho ran\n")
        program.chmod(0o755)
        return {}

    shared().get_or_build("p", {}, build)
    fetched = shared().get_or_build("p", {}, build)
    assert not fetched.built_now and os.access(fetched.path / "program", os.X_OK)


def test_a_fetched_entry_keeps_its_empty_folders(shared, tmp_path):
    """Object storage has no folders: a SavedModel's empty assets/ (or a plugin's cache folder) is
    there where the entry is fetched, and a manifest naming a folder outside the entry is none."""
    def build(out: Path):
        (out / "saved_model.pb").write_bytes(b"graph")
        (out / "assets").mkdir()
        (out / "cache" / "engines").mkdir(parents=True)
        return {}

    first = shared()
    first.get_or_build("f", {}, build)
    fetched = shared().get_or_build("f", {}, build)
    assert not fetched.built_now
    assert (fetched.path / "assets").is_dir() and (fetched.path / "cache" / "engines").is_dir()
    manifest = first.remote.manifest("f")
    first.remote.fs.pipe_file(first.remote.manifest_path("f"), json.dumps(
        {**manifest, "empty_folders": ["../../outside"]}).encode())
    reader = shared()
    assert reader.get_or_build("f", {}, build).built_now and "outside the entry" in reader.notices[0]
    assert not (tmp_path / "outside").exists()


def test_a_workers_store_notice_reaches_the_terminal_and_the_report(run_parity, s3_server, tmp_path):
    """The ONNX export's published files truncated, then a run on another machine (an empty cache)
    under pytest-xdist: a worker rebuilds it (the controller never reads a conversion's entry), and
    the controller prints and reports what the worker saw."""
    from tests.conftest import TINY

    options = [f"--store-option={name}={json.dumps(value)}" for name, value in s3_server.items()]
    run = ("--model", f"{TINY}:build", "--formats", "onnx-dynamo-ort", "--store",
           "s3://modelparity/notices", *options)
    run_parity(*run, "--store-cache", str(tmp_path / "first")).assert_outcomes(passed=3)
    tier = RemoteTier("s3://modelparity/notices", s3_server)
    for manifest_path in tier.fs.find(tier._path("entries")):
        manifest = json.loads(tier.fs.cat_file(manifest_path))
        key = manifest_path.rsplit("/", 1)[1].removesuffix(".json")
        for name in manifest["files"]:
            if name.endswith(".onnx"):
                path = tier.object_path(key, manifest["build"], name)
                tier.fs.pipe_file(path, tier.fs.cat_file(path)[:1])
    second = run_parity(*run, "--store-cache", str(tmp_path / "second"), "-n", "2")
    second.assert_outcomes(passed=3)
    second.stdout.fnmatch_lines(["modelparity: store: *.onnx has 1 bytes*published in its place"])
    report = json.loads((second.reports / "parity.json").read_text())
    assert any(".onnx has 1 bytes" in notice for notice in report["session"]["store_notices"]), \
        report["session"]


def test_a_held_lease_is_renewed_and_a_dead_one_lapses_after_its_term(shared, tmp_path, monkeypatch):
    """With a 0.6 s term renewed every 0.15 s: a builder that takes 2 s keeps its lease (the second
    machine waits and takes its entry: one build), while a lease nobody renews (its builder killed
    on another host) is past its expiry one term after it was written, whatever the build timeout."""
    import threading

    from modelparity import remote_store

    monkeypatch.setattr(remote_store, "LEASE_TERM", 0.6)
    monkeypatch.setattr(remote_store, "LEASE_RENEW", 0.15)
    counter = tmp_path / "count"
    first, second = shared(), shared()

    def slow(out: Path):
        time.sleep(2)
        return _build(counter)(out)
    building = threading.Thread(target=first.get_or_build, args=("k", {}, slow))
    building.start()
    time.sleep(0.3)
    holder = json.loads(second.remote.fs.cat_file(second.remote.lease_path("k")))
    assert holder["expires"] - time.time() < 0.6, "the term, not the build timeout"
    took = second.get_or_build("k", {}, _build(counter))
    building.join()
    assert not took.built_now and _built(counter) == 1, "the second machine waited for the first"
    assert not second.remote.fs.exists(second.remote.lease_path("k")), "the lease is released"
