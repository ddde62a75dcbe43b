"""ONNX Runtime: every ONNX artifact at full optimisation on the CPU; the primary export at each
graph-optimisation level, with the seed's threading options (intra_op_num_threads, ORT_PARALLEL) and
its memory option (session.use_device_allocator_for_initializers); and on the CUDA and TensorRT
execution providers where this onnxruntime offers them (onnxruntime-gpu on an NVIDIA machine)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.custom_ops import onnxruntime_libraries
from modelparity.execution import SHAPE_OPS
from modelparity.formats.base import ONNXRUNTIME, Format, LoadContext
from modelparity.formats.onnx_export import PRIMARY_ONNX
from modelparity.gpu import GPU_INSTALL, gpu_facts
from modelparity.models import ModelArtifact

LEVELS = ("disabled", "basic", "extended", "all")
# The device each execution provider runs nodes on, as a runner's `devices` fact names it.
PROVIDER_DEVICES = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA",
                    "TensorrtExecutionProvider": "TensorRT"}
# name suffix -> (the providers in priority order, the kind --providers names it by)
GPU_PROVIDERS = {
    "cuda": (("CUDAExecutionProvider", "CPUExecutionProvider"), "cuda"),
    "trt": (("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), "tensorrt"),
}
# The CUDA provider computes float32 MatMul/Conv in TF32 unless use_tf32=0: an fp32 format asks for
# float32. TensorRT builds FP16 kernels only with trt_fp16_enable; its engines are kept (cache).
CUDA_FP32 = {"CUDAExecutionProvider": {"use_tf32": "0"}}


class OnnxRuntimeRunner:
    """An InferenceSession over `model.onnx` with the node's session options.

    ONNX Runtime silently falls back to the next provider when the first cannot be created (no GPU,
    TensorRT libraries missing): the runner refuses that, so a GPU format never passes on the CPU.
    """

    runtime_modules = ("onnxruntime",)

    def __init__(self, context: LoadContext) -> None:
        import onnxruntime as ort

        params = context.params
        options = ort.SessionOptions()
        options.graph_optimization_level = optimisation_level(params.get("level", "all"))
        if params.get("intra_op_threads"):
            options.intra_op_num_threads = params["intra_op_threads"]
        if params.get("parallel"):
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        for key, value in params.get("session_config", {}).items():
            options.add_session_config_entry(key, value)
        options.log_severity_level = 3
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if context.model is not None:
            for library in onnxruntime_libraries(ModelArtifact(context.model).custom_ops()):
                options.register_custom_ops_library(library)
        providers = list(params.get("providers", ["CPUExecutionProvider"]))
        provider_options = {name: dict(values) for name, values in params.get("provider_options", {}).items()}
        if "TensorrtExecutionProvider" in provider_options:
            cache = engine_cache(context.artifact)
            provider_options["TensorrtExecutionProvider"].update(
                trt_engine_cache_enable="True", trt_engine_cache_path=str(cache),
                trt_timing_cache_enable="True", trt_timing_cache_path=str(cache))
        self._session = ort.InferenceSession(
            str(context.artifact / "model.onnx"), options,
            providers=[(name, provider_options.get(name, {})) for name in providers])
        active = self._session.get_providers()
        if active[0] != providers[0]:
            raise RuntimeError(f"ONNX Runtime could not create {providers[0]} and fell back to "
                               f"{active[0]} (providers active: {active}); this format must run on "
                               f"{providers[0]}")
        self._outputs = context.output_names
        self.facts = {
            "runtime": f"onnxruntime {ort.__version__}",
            "provider": active[0],
            "providers_requested": providers,
            "providers": active,
            "graph_optimization_level": params.get("level", "all"),
            "threads": options.intra_op_num_threads or "runtime default (one per physical core)",
            "execution_mode": "parallel" if params.get("parallel") else "sequential",
            "session_config": dict(params.get("session_config", {})),
            **node_assignment(self._session),
        }
        if active[0] != "CPUExecutionProvider":
            machine = gpu_facts()
            self.facts.update({key: machine.get(key) for key in ("gpus", "driver", "torch_cuda_build",
                                                                   "cudnn", "tensorrt")})
        cuda = self._session.get_provider_options().get("CUDAExecutionProvider")
        if cuda is not None:  # the CUDA provider computes float32 MatMul/Conv in TF32 when use_tf32=1
            self.facts["compute_precision"] = "tf32" if cuda.get("use_tf32") == "1" else "f32"
            self.facts["compute_precision_source"] = f"CUDAExecutionProvider use_tf32={cuda.get('use_tf32')}"

    def declared_shapes(self) -> dict[str, list[int | None]]:
        return {i.name: [d if isinstance(d, int) else None for d in i.shape]
                for i in (*self._session.get_inputs(), *self._session.get_outputs())}

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
        return functools.partial(self._session.run, self._outputs, dict(inputs))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.timed_call(inputs)(), strict=True))


def node_assignment(session: Any) -> dict[str, Any]:
    """Which provider runs each node, from ONNX Runtime's own record of its graph partitioning
    (session.record_ep_graph_assignment_info): the devices that ran nodes, nodes per provider, and the
    non-shape nodes left on the CPU when the first provider is not the CPU's (a silent fallback)."""
    if not hasattr(session, "get_provider_graph_assignment_info"):  # an older onnxruntime
        return {"devices": sorted({PROVIDER_DEVICES.get(p, p) for p in session.get_providers()[:1]}),
                "device_nodes": "not reported: this onnxruntime has no get_provider_graph_assignment_info"}
    on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
    counts: dict[str, int] = {}
    fallback: list[str] = []
    for subgraph in session.get_provider_graph_assignment_info():
        nodes = subgraph.get_nodes()
        counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(nodes)
        if on_gpu and subgraph.ep_name == "CPUExecutionProvider":
            fallback += [f"{n.op_type} {n.name}" for n in nodes if n.op_type not in SHAPE_OPS]
    # A GPU session's shape nodes on the CPU are by design: the CPU counts only with a fallback.
    devices = {PROVIDER_DEVICES.get(p, p) for p in counts if not (on_gpu and p == "CPUExecutionProvider")}
    if fallback:
        devices.add("CPU")
    facts: dict[str, Any] = {"device_nodes": counts, "devices": sorted(devices)}
    if on_gpu:
        facts["cpu_fallback_nodes"] = fallback
    return facts


def engine_cache(artifact: Path) -> Path:
    """Where TensorRT keeps the engines built for an ONNX artifact: in the artifact store (beside the
    artifacts, keyed by the ONNX artifact's key), never inside the artifact itself, so the engines
    survive between runs and a new artifact gets new ones."""
    store_root = artifact.parent.parent  # the store's layout: ROOT/key[:2]/key
    cache = store_root / "tensorrt-engines" / artifact.name
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def optimisation_level(name: str) -> Any:
    """onnxruntime's GraphOptimizationLevel for one of LEVELS."""
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return dict(zip(LEVELS, (levels.ORT_DISABLE_ALL, levels.ORT_ENABLE_BASIC, levels.ORT_ENABLE_EXTENDED,
                             levels.ORT_ENABLE_ALL), strict=True))[name]


def provider_offered(provider: str) -> Callable[[Mapping[str, Any]], str | None]:
    """`applies` for a provider: not applicable where this onnxruntime build does not offer it."""
    def applies(machine: Mapping[str, Any]) -> str | None:
        import onnxruntime as ort

        offered = ort.get_available_providers()
        if provider in offered:
            return None
        return (f"not applicable: this onnxruntime ({ort.__version__}) offers {offered}, not "
                f"{provider}; on an NVIDIA GPU machine install the gpu extra instead of the cpu one: "
                f"{GPU_INSTALL}")
    return applies


def _ort(parent: str, name: str = "ort", precision: str = "fp32", **params: Any) -> Format:
    return Format(name, parent=parent, load=OnnxRuntimeRunner, params=params, precision=precision,
                  requires=(ONNXRUNTIME,), custom_ops=True, description=f"ONNX Runtime CPU {params}")


def _gpu(parent: str, name: str, precision: str = "fp32", fp16_engine: bool = False) -> Format:
    """ONNX Runtime on the CUDA or TensorRT provider; the CUDA provider with TF32 off for float32."""
    providers, kind = GPU_PROVIDERS[name]
    options: dict[str, dict[str, str]] = dict(CUDA_FP32) if precision == "fp32" else {}
    if name == "trt":
        options["TensorrtExecutionProvider"] = {"trt_fp16_enable": str(fp16_engine)}
    suffix = "-fp16" if fp16_engine else ""
    return Format(f"ort-{name}{suffix}", parent=parent, load=OnnxRuntimeRunner, precision=precision,
                  params={"level": "all", "providers": list(providers), "provider_options": options},
                  requires=(ONNXRUNTIME,), applies=provider_offered(providers[0]), device="cuda",
                  runs_on=kind, custom_ops=True, description=f"ONNX Runtime on {providers[0]}"
                  + (" with FP16 engines" if fp16_engine else ""))


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    nodes = []
    for node in graph.values():
        if node.produces == "onnx":
            nodes.append(_ort(node.id, precision=node.precision, level="all"))
    if PRIMARY_ONNX in graph:
        for level in LEVELS[:-1]:
            nodes.append(_ort(PRIMARY_ONNX, f"ort-{level}", level=level))
        nodes.append(_ort(PRIMARY_ONNX, "ort-seq1", level="all", intra_op_threads=1))
        nodes.append(_ort(PRIMARY_ONNX, "ort-par2", level="all", intra_op_threads=2, parallel=True))
        nodes.append(_ort(PRIMARY_ONNX, "ort-devalloc", level="all", session_config={
            "session.use_device_allocator_for_initializers": "1"}))
        nodes += [_gpu(PRIMARY_ONNX, name) for name in GPU_PROVIDERS]
        nodes.append(_gpu(PRIMARY_ONNX, "trt", precision="fp16", fp16_engine=True))
    if f"{PRIMARY_ONNX}-fp16" in graph:
        nodes.append(_gpu(f"{PRIMARY_ONNX}-fp16", "cuda", precision="fp16"))
    return nodes
