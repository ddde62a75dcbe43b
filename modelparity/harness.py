"""The engine the suites drive: models, artifacts built through the store in isolation, runners,
and reference outputs. It knows nothing of pytest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.checks.noise_floor import FloorFile, NoiseFloor, float64_copy
from modelparity.checks.noise_floor import measure as measure_floors
from modelparity.checks.reference import ReferenceVerdict, check_reference
from modelparity.factory_cache import cached_spec, keep_spec
from modelparity.formats import FormatGraph
from modelparity.formats.base import Format, LoadContext, Requirement, Runner
from modelparity.isolate import ConversionWorkers, IsolatedError
from modelparity.machine import machine_info, versions_for_modules
from modelparity.models import load_spec, model_identity, save_model_artifact
from modelparity.phases import PhaseClock
from modelparity.phases import add as add_phases
from modelparity.references import import_module_of
from modelparity.runner_worker import IsolatedRunner, RuntimeWorkers
from modelparity.spec import ModelSpec, SpecError
from modelparity.store import Artifact, ArtifactStore, StoredBuildError, content_key

REFERENCE_CHECK_SEED = 20261201
DEFAULT_ISOLATED_RUNTIMES = frozenset({"onnxruntime"})
# a format's runtime, by the modules it requires: LiteRT before TensorFlow (a .tflite chain needs
# both, and runs on LiteRT), OpenVINO before NNCF
RUNTIME_MODULES = ("onnxruntime", "openvino", "ai_edge_litert", "tensorflow", "executorch", "coremltools",
                   "torch")
# a conversion's worker process (modelparity.isolate.ConversionWorkers), by the modules its node
# requires: the heaviest import first, so that an onnx2tf conversion (onnx, tensorflow) and an
# OpenVINO one from torch (torch, openvino) go to the worker that has imported what they need most
CONVERSION_FAMILIES = ("tensorflow", "openvino", "onnxruntime", "torch", "onnx")


@dataclass
class LoadedModel:
    reference: str
    spec: ModelSpec
    identity: dict[str, Any]
    artifact: Artifact
    _references: dict[tuple[Any, ...], dict[str, np.ndarray]] = field(default_factory=dict)
    _floors: dict[tuple[Any, ...], dict[str, NoiseFloor]] = field(default_factory=dict)
    _float64: Any = None
    _verdict: ReferenceVerdict | None = None
    _reference_parts: dict[str, Any] | None = None

    def reference_parts(self) -> dict[str, Any]:
        """What torch eager's answers depend on beyond the identity (weights and the classes'
        code): each submodule's training flag (a factory that forgot .eval() runs dropout), the
        factory's own source file, torch's float32 matmul precision, and the machine (thread count
        and CPU: reductions split and vectorise differently). Keys the stored reference outputs,
        floors and verdict."""
        if self._reference_parts is None:
            import torch

            modes = "".join("t" if m.training else "e" for m in self.spec.module.modules())
            factory = import_module_of(self.reference).__file__
            info = machine_info()
            self._reference_parts = {
                "identity": self.identity, "modes": hashlib.sha1(modes.encode()).hexdigest()[:16],
                "factory": hashlib.sha256(Path(factory).read_bytes()).hexdigest()[:16] if factory else None,
                "matmul": torch.get_float32_matmul_precision(), "threads": torch.get_num_threads(),
                "cpu": [info["cpu_model"], info["cpu_flags"]]}
        return self._reference_parts

    def float64_module(self) -> Any:
        """A float64 copy of the module, made once (raises what .double() raises)."""
        if self._float64 is None:
            self._float64 = float64_copy(self.spec.module)
        return self._float64


@dataclass
class BuildRecord:
    """How a format's artifact came to be: one entry per built node of its chain."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def built_seconds(self) -> float:
        return sum(s["build_seconds"] for s in self.steps if s["built_now"])


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A key for reference outputs: the inputs' names, shapes, dtypes and bytes (never an object's
    id, which Python reuses once the object is gone)."""
    digest = hashlib.sha1()
    for name, value in arrays.items():
        digest.update(f"{name}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def file_stamps(directory: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under `directory`: what a build must not change."""
    return {str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in directory.rglob("*") if path.is_file()}


def private_copy(source: Path, where: Path) -> Path:
    """The parent artifact as a converter gets it: a tree of hard links (a copy where the file
    system has none), so that a converter writing beside its input (ONNX Runtime's quantizers write
    and delete `model-inferred.onnx` there) does so in its own folder, not in the parent two
    sibling conversions read at once. `where` sits beside the build's temporary folder, named after
    its key, so the store removes it with that folder if the run dies. Rewriting a linked file in
    place would still reach the parent: file_stamps catches that."""
    def link(source_file: str, target_file: str) -> None:
        try:
            os.link(source_file, target_file)
        except OSError:
            shutil.copy2(source_file, target_file)
    shutil.copytree(source, where, symlinks=True, copy_function=link)
    return where


@cache
def code_digest(target: str) -> str:
    """A hash of the source of the module a builder lives in: changing a converter rebuilds."""
    module = import_module_of(target)
    source = Path(module.__file__) if module.__file__ else None
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source else "unknown"


class Harness:
    """Models, artifacts and runners, each made once per session (and once per store for artifacts)."""

    def __init__(self, graph: FormatGraph, store: ArtifactStore, build_timeout: float) -> None:
        self.graph = graph
        self.store = store
        self.build_timeout = build_timeout
        self._models: dict[str, LoadedModel] = {}
        self._runners: dict[tuple[str, str, bool], tuple[Runner, float]] = {}
        self.floor_file: FloorFile | None = None  # committed noise floors (not while calibrating)
        self.inputs_dir: Path | None = None  # where each check's inputs are saved for a repro
        self.require_gpu = False  # a GPU format that cannot run here fails instead of skipping
        self.strict_informative = False  # a vacuous check of a user's model fails instead of warning
        # runtimes whose runners run in a worker process (modelparity.runner_worker): see the
        # README's "Runtimes in worker processes" for the measured cost and the crash history
        self.isolate_runtimes: frozenset[str] = DEFAULT_ISOLATED_RUNTIMES
        self._workers: RuntimeWorkers | None = None
        self.store_timeouts = False  # a converter that timed out is a stored failure (--store-timeouts)
        self._converters = ConversionWorkers()
        # each chain node's artifact (or failure) once made in this session, by (model, node id);
        # keys whose build a check's record has reported as built now (once per session)
        self._nodes: dict[tuple[str, str], Artifact | StoredBuildError] = {}
        self._reported_built: set[str] = set()
        self._nodes_lock = threading.Lock()
        self._preloads: dict[str, set[str]] = {}  # family -> modules, for prebuild's first build
        self.clock = PhaseClock()  # seconds per phase of each check (modelparity.phases)
        self.session_phases: dict[str, float] = {}  # work done before or outside the checks

    def noise_floors(self, model: LoadedModel, inputs: Mapping[str, np.ndarray], key: tuple[Any, ...]
                     ) -> dict[str, NoiseFloor]:
        """The reference's own noise per output on `inputs` (modelparity.checks.noise_floor): from the
        committed floor file when it has this model, batch and weights; measured otherwise."""
        if key not in model._floors:
            batch = key[0]
            found = (self.floor_file.lookup(model.spec.name, model.identity, batch)
                     if self.floor_file is not None else None)
            if found is None:
                reference = self.reference_outputs(model, inputs, key)
                with self.clock("floors"):
                    found = self._stored(
                        "noise-floors", model, inputs, "modelparity.checks.noise_floor:measure",
                        lambda: {name: dataclasses.asdict(floor) for name, floor in measure_floors(
                            model.spec.module, inputs, reference, model.spec.output_names,
                            model.float64_module).items()},
                        lambda stored: {name: NoiseFloor(**floor) for name, floor in stored.items()})
            model._floors[key] = found
        return model._floors[key]

    def _stored(self, kind: str, model: LoadedModel, inputs: Mapping[str, np.ndarray], code: str,
                compute: Callable[[], Any], decode: Callable[[Any], Any]) -> Any:
        """What torch eager computed about the model on `inputs`, read back from the store when its
        inputs have not changed: the model (LoadedModel.reference_parts), the inputs' content and
        the code that computes it (`code`, a reference into the module). `compute()` returns JSON
        (arrays as a dict of name -> np.ndarray, kept as .npz); `decode` makes the value from it."""
        parts = {"kind": kind, "model": model.reference_parts(), "inputs": content_digest(inputs),
                 "code": code_digest(code)}

        def build(out: Path) -> Mapping[str, Any]:
            value = compute()
            if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
                np.savez(out / "arrays.npz", **value)
            else:
                (out / "value.json").write_text(json.dumps(value))
            return {}
        entry = self.store.get_or_build(content_key(parts), parts, build)
        if (entry.path / "arrays.npz").is_file():
            with np.load(entry.path / "arrays.npz", allow_pickle=False) as data:
                return decode({name: data[name] for name in data.files})
        return decode(json.loads((entry.path / "value.json").read_text()))

    def save_inputs(self, model: LoadedModel, inputs: Mapping[str, np.ndarray], label: str) -> Path | None:
        """Write a check's inputs as .npz under inputs_dir (once per content), for the repro command."""
        if self.inputs_dir is None:
            return None
        path = self.inputs_dir / f"{model.spec.name}-{label}-{content_digest(inputs)[:10]}.npz"
        if not path.is_file():
            self.inputs_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(partial, **inputs)
            partial.replace(path)
        return path

    def model(self, reference: str) -> LoadedModel:
        if reference not in self._models:
            with self.clock("factory"):
                spec = cached_spec(self.store, reference)
                if spec is None:
                    spec = load_spec(reference)
                    keep_spec(self.store, reference, spec)
                identity = model_identity(spec, reference)
                parts = {"model": identity}
                artifact = self.store.get_or_build(content_key(parts), parts,
                                                   lambda out: save_model_artifact(spec, reference, out))
            self._models[reference] = LoadedModel(reference, spec, identity, artifact)
        return self._models[reference]

    def reference_verdict(self, model: LoadedModel) -> ReferenceVerdict:
        """Whether torch eager can serve as this model's reference (modelparity.checks.reference),
        checked once per session on a seeded batch (of 4 where the batch axis allows)."""
        if model._verdict is None:
            spec = model.spec
            sizes = ({spec.batch_axis: min(4, spec.axis_ranges[spec.batch_axis].max)}
                     if spec.batch_axis else {})
            inputs = spec.inputs_for(sizes, seed=REFERENCE_CHECK_SEED)
            with self.clock("reference"):
                model._verdict = self._stored(
                    "reference-verdict", model, inputs, "modelparity.checks.reference:check_reference",
                    lambda: dataclasses.asdict(check_reference(
                        spec.name, lambda feed: self._eager(model, feed), inputs)),
                    lambda stored: ReferenceVerdict(**stored))
        return model._verdict

    def reference_outputs(self, model: LoadedModel, inputs: Mapping[str, np.ndarray],
                          key: tuple[Any, ...]) -> dict[str, np.ndarray]:
        """Torch eager FP32 outputs for `inputs`; NaN/Inf in them is the model's problem, said so."""
        if key not in model._references:
            with self.clock("reference"):
                outputs = self._stored("reference-outputs", model, inputs,
                                       "modelparity.harness:Harness._eager",
                                       lambda: {name: np.asarray(value) for name, value
                                                in self._eager(model, inputs).items()}, dict)
            for name, value in outputs.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    raise SpecError(f"model {model.spec.name!r} ({model.reference}) produces NaN/Inf "
                                    f"in output {name!r} in torch eager itself, for inputs of shapes "
                                    f"{ {k: v.shape for k, v in inputs.items()} }; fix the model or "
                                    "its make_inputs before checking exports")
            model._references[key] = outputs
        return model._references[key]

    @staticmethod
    def _eager(model: LoadedModel, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from modelparity.formats.torchscript import as_named_outputs

        with torch.no_grad():
            result = model.spec.module(*[torch.from_numpy(v) for v in inputs.values()])
        return as_named_outputs(result, model.spec.output_names)

    def artifact(self, model: LoadedModel, format_id: str, record: BuildRecord) -> Artifact:
        """The nearest built artifact on `format_id`'s chain, building what is missing (what
        prebuild made is ready). Each built node is a step of `record`; a node built in this session
        says `built_now` in the first record that uses it only, so counting those counts builds."""
        source = model.artifact
        chain = self.graph.chain(format_id)
        with self.clock("build"):
            for depth, node in enumerate(chain):
                if node.build is None:
                    continue
                source = self.node_artifact(model, chain, depth, source)
                with self._nodes_lock:
                    built_now = source.built_now and source.key not in self._reported_built
                    self._reported_built.add(source.key)
                record.steps.append({"node": node.id, "key": source.key, "built_now": built_now,
                                     "fetched_from": source.manifest.get("fetched_from"),
                                     "build_seconds": source.manifest.get("build_seconds", 0.0),
                                     "info": source.manifest.get("info", {}),
                                     "log": str(source.path / "build.log")})
        return source

    def node_artifact(self, model: LoadedModel, chain: list[Format], depth: int, source: Artifact
                      ) -> Artifact:
        """The artifact of `chain[depth]` made from `source` (its parent's), once per session.

        A node's key holds its parent's key and build id: the parent's key alone hashes only the
        parent's inputs, and a parent rebuilt under it (--rebuild of that format, a corrupt or
        deleted entry) may hold other bytes, so its children (and their stored failures) are made
        anew. The build id rather than a digest of the parent's files: free (no hashing of large
        artifacts), and it changes on every rebuild however the old bytes went wrong."""
        node = chain[depth]
        assert node.build is not None
        made = self._nodes.get((model.reference, node.id))
        if made is None:
            steps = [(n.name, n.build, code_digest(n.build), dict(n.params))
                     for n in chain[: depth + 1] if n.build]
            modules = tuple(sorted({r.module for n in chain[: depth + 1] for r in n.requires}))
            parts = {"model": model.identity, "chain": steps, "tools": versions_for_modules(modules),
                     "parent": {"key": source.key, "build": source.build_id}}
            try:
                made = self.store.get_or_build(content_key(parts), parts, self._builder(
                    node, source.path, model.artifact.path), self.build_timeout)
            except StoredBuildError as error:
                made = error
            self._nodes[(model.reference, node.id)] = made
        if isinstance(made, StoredBuildError):
            raise made
        return made

    def prebuild(self, wanted: list[tuple[str, str]], parallel: int,
                 progress: Callable[[str], None]) -> None:
        """Make the artifacts of `wanted` (model reference, format id) before the checks ask
        (modelparity.prebuild): `parallel` conversions at a time, parents first."""
        from modelparity.prebuild import Prebuild

        # at the first conversion that is not in the store, each family's worker starts importing
        # (its runtime, its builders' modules, the model's module where a builder unpickles the
        # model), so that TensorFlow's import overlaps the torch export before onnx2tf; a warm run
        # starts none
        preloads: dict[str, set[str]] = {}
        for reference, format_id in wanted:
            for node in self.graph.chain(format_id):
                if node.build:
                    modules = preloads.setdefault(self.conversion_family(node), set())
                    modules |= {node.build, *(r.module for r in node.requires
                                              if isinstance(r, Requirement))}
                    if any(r.module == "torch" for r in node.requires):
                        modules.add(reference)
        with self._nodes_lock:
            self._preloads = preloads
        for runtime in {self.runtime_family(f) for _, f in wanted if self.runs_isolated(f)} - {None}:
            self._runtime_workers().generation(str(runtime))  # started: it imports its runtime
        add_phases(self.session_phases, self.clock.take())
        started = time.perf_counter()
        try:
            Prebuild(self, max(1, parallel), progress).run(wanted)
        except BaseException:  # Ctrl-C: stop the conversions rather than wait for them
            self._converters.interrupt()
            raise
        finally:
            inside = self.clock.take()  # the factories it called, charged as such
            add_phases(self.session_phases, inside)
            add_phases(self.session_phases,
                       {"prebuild": time.perf_counter() - started - sum(inside.values())})

    def conversion_family(self, node: Format) -> str:
        """Which conversion worker process builds the node (CONVERSION_FAMILIES)."""
        modules = [r.module for r in node.requires if isinstance(r, Requirement)]
        known = [m for m in CONVERSION_FAMILIES if m in modules]
        return known[0] if known else "-".join(sorted(modules)) or "python"

    def _builder(self, node: Format, source: Path, model: Path) -> Any:
        """A store build running the node's builder in its family's conversion worker. Only the
        converter's own failures are stored: not an ImportError (the environment: fixed by
        installing, and must not outlive the fix), not a timeout (the machine's load; unless
        `store_timeouts`, --store-timeouts), which the store remembers for this session instead so
        each later check of the format does not wait the whole timeout again."""
        target = node.build
        assert target is not None

        def build(out: Path) -> Mapping[str, Any]:
            with self._nodes_lock:
                preloads, self._preloads = self._preloads, {}
            for family, modules in preloads.items():
                self._converters.preload(family, sorted(modules))
            before = file_stamps(source)
            private = private_copy(source, out.with_name(f"{out.name}.input"))
            try:
                info = self._converters.run(self.conversion_family(node), target, {
                    "source": str(private), "out": str(out), "params": dict(node.params),
                    "model": str(model)}, self.build_timeout, out / "build.log")
            except IsolatedError as error:
                stored = error.kind != "import" and (error.kind != "timeout" or self.store_timeouts)
                details = {"kind": error.kind, "summary": error.summary, "tail": error.tail,
                           "cache": stored}
                if error.kind == "timeout":
                    details["remember"] = "timed out earlier in this session; not retried until the next run"
                raise StoredBuildError(str(error), details) from None
            finally:
                shutil.rmtree(private, ignore_errors=True)
            changed = sorted(name for name, stamp in file_stamps(source).items()
                             if before.get(name, stamp) != stamp)
            if changed:
                message = (f"{target} rewrote {', '.join(changed)} of its input artifact {source}: a "
                           "converter must read its parent, never write it (give it a copy); that "
                           "artifact no longer holds what its own builder wrote: delete it")
                raise StoredBuildError(message, {"kind": "modified-parent", "summary": message,
                                                 "tail": "", "cache": False})
            return info
        return build

    def runtime_family(self, format_id: str) -> str | None:
        """The runtime a format's runner uses: the first of RUNTIME_MODULES it requires (else its last
        requirement's module); None for a runner that lives in its own environment (onnx-tf)."""
        node = self.graph.nodes[format_id]
        modules = [r.module for r in node.requires if isinstance(r, Requirement)]
        known = [m for m in RUNTIME_MODULES if m in modules]
        return known[0] if known else (modules[-1] if modules else None)

    def runs_isolated(self, format_id: str) -> bool:
        """Whether parity, dynamic and batch run the format's runner in a worker process: always
        for a format with `isolate_runtime`, and for every format of an `isolate_runtimes` runtime
        (an HTTP service is a process boundary of its own, and stays in process)."""
        node = self.graph.nodes[format_id]
        if node.serves_http:
            return False
        return node.isolate_runtime or self.runtime_family(format_id) in self.isolate_runtimes

    def runner(self, model: LoadedModel, format_id: str, artifact: Artifact, in_process: bool = False
               ) -> tuple[Runner, float]:
        """A loaded runner for the format, and how long loading took (first time only). A format
        that runs isolated (runs_isolated) gets a runner in its runtime's worker process unless
        `in_process` is asked for (suites/latency, after running it in a child first)."""
        node = self.graph.nodes[format_id]
        isolated = self.runs_isolated(format_id) and not in_process
        key = (model.reference, format_id, isolated)
        if key not in self._runners:
            assert node.load is not None, f"{format_id} has no runner"
            context = LoadContext(artifact.path, node.params, model.spec.input_names,
                                  model.spec.output_names, model.artifact.path)
            started = time.perf_counter()
            with self.clock("load"):
                if isolated:
                    runner: Runner = IsolatedRunner(self._runtime_workers(), self.runtime_family(format_id)
                                                    or node.id, self.graph, format_id, context)
                else:
                    runner = node.load(context)
            self._runners[key] = (runner, time.perf_counter() - started)
        return self._runners[key]

    def _runtime_workers(self) -> RuntimeWorkers:
        if self._workers is None:
            self._workers = RuntimeWorkers(self.build_timeout)
        return self._workers

    def worker_pids(self) -> dict[str, int]:
        """Runtime family -> the process id of its runner worker, for those running."""
        return self._workers.pids() if self._workers is not None else {}

    def close(self) -> None:
        """Stop the runtime and conversion worker processes (the session's end)."""
        self._converters.close()
        if self._workers is not None:
            self._workers.close()
            self._workers = None
