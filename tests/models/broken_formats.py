"""Deliberately broken formats, loaded with --format-plugin, to prove the checks fail."""

import ctypes
import os
import time
from pathlib import Path

import numpy as np

from modelparity.formats.base import ONNXRUNTIME, OPENVINO, TORCH, Format, NotTimeable, Requirement
from modelparity.formats.http import http_format
from modelparity.formats.libtorch_cpp import COMPILER, LibTorchCppRunner, program_params
from modelparity.formats.onnx2tf import SavedModelRunner
from modelparity.formats.onnx_tf import LEGACY_ENV, OnnxTfRunner
from modelparity.formats.onnxruntime import OnnxRuntimeRunner
from modelparity.formats.openvino import OpenVinoRunner
from modelparity.formats.torch_export import ExportedProgramRunner

HERE = Path(__file__).resolve()


def perturb_one_weight(source, out, params, model):
    """Copy the ONNX file with one element of the largest initializer shifted by `delta`."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(Path(source) / "model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(biggest).copy()
    values.flat[0] += params["delta"]
    biggest.CopyFrom(numpy_helper.from_array(values, biggest.name))
    onnx.save(model, str(Path(out) / "model.onnx"))
    return {"perturbed": biggest.name}


def perturb_torchscript(source, out, params, model):
    """Copy the LibTorch C++ artifact with its TorchScript file's first parameter shifted by `delta`."""
    import shutil

    import torch

    for item in Path(source).iterdir():
        if item.is_file():
            shutil.copy2(item, Path(out) / item.name)
    module = torch.jit.load(str(Path(source) / "model.ts"))
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] += params["delta"]
    torch.jit.save(module, str(Path(out) / "model.ts"))
    return {"perturbed": "first parameter"}


def perturb_exported_program(source, out, params, model):
    """Copy the torch.export program with one element of its first weight shifted by `delta`: every
    format lowered from it (ExecuTorch, AOTInductor) must then fail."""
    import torch

    from modelparity.formats.torch_export import PROGRAM, load_program

    program = load_program(Path(source))
    name, weight = next(iter(program.state_dict.items()))
    with torch.no_grad():
        weight.view(-1)[0] += params["delta"]
    torch.export.save(program, str(Path(out) / PROGRAM))
    return {"perturbed": name}


def export_without_dynamic_axes(source, out, params, model):
    """torch.export of the model with no dynamic_shapes: every axis frozen at the export's sizes,
    the mistake suites/dynamic must catch in every format lowered from it."""
    import torch

    from modelparity.formats.torch_export import PROGRAM
    from modelparity.models import ModelArtifact

    artifact = ModelArtifact(Path(model))
    inputs = tuple(torch.from_numpy(v) for v in artifact.export_inputs().values())
    torch.export.save(torch.export.export(artifact.load_module().eval(), inputs), str(Path(out) / PROGRAM))
    return {"dynamic_shapes": None}


def lowered_from(export_id, graph, options):
    """The built-in formats lowered from torch.export (ExecuTorch, AOTInductor, Core ML), re-rooted
    under `export_id`: the real converters and runtimes, given a broken program."""
    from dataclasses import replace

    from modelparity.formats import aoti_package, coreml, executorch_pte
    from modelparity.formats.torch_export import NODE

    nodes = (executorch_pte.formats(graph, options) + aoti_package.formats(graph, options)
             + coreml.formats(graph, options))
    return [replace(node, parent=node.parent.replace(NODE, export_id, 1)) for node in nodes]


def scale_one_weight_scale(source, out, params, model):
    """Copy a quantised ONNX file with its first weight scale multiplied by `factor`: the classic
    INT8 deployment bug (a scale from the wrong calibration, or per-tensor where per-channel was meant)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(Path(source) / "model.onnx"))
    scale = next(t for t in proto.graph.initializer if t.name.endswith("weight_scale"))
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * params["factor"], scale.name))
    onnx.save(proto, str(Path(out) / "model.onnx"))
    return {"scaled": scale.name}


def break_batched_rows(source, out, params, model):
    """Copy the ONNX file with every output row after the first broken (`kind`): "offset" adds 5% of
    the output's range, "gain" scales by 1.1, "uncorrelated" replaces it by a deterministic function
    of the output that is uncorrelated with it. Row 0 is left alone, so that a batch of one passes
    and batch consistency, parity at batch > 1 and dynamic shapes must find it; every transform is
    relative to the output itself, so it breaks a model at any output scale the same way."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(Path(source) / "model.onnx"))
    graph = proto.graph
    y_out, y = graph.output[0].name, "b_unbroken"
    for node in graph.node:
        node.output[:] = [y if name == y_out else name for name in node.output]

    def const(name, value):
        graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
        return name

    nodes = [helper.make_node("Mul", [y, const("b_zero", 0.0)], ["b_zeros"]),
             helper.make_node("Add", ["b_zeros", const("b_one", 1.0)], ["b_ones"]),
             helper.make_node("CumSum", ["b_ones", "b_axis"], ["b_counts"]),
             helper.make_node("Sub", ["b_counts", "b_one"], ["b_index"]),
             helper.make_node("Min", ["b_index", "b_one"], ["b_mask"])]
    graph.initializer.append(helper.make_tensor("b_axis", TensorProto.INT64, [], [0]))
    if params["kind"] == "offset":
        nodes += [helper.make_node("ReduceMax", [y], ["b_max"], keepdims=0),
                  helper.make_node("ReduceMin", [y], ["b_min"], keepdims=0),
                  helper.make_node("Sub", ["b_max", "b_min"], ["b_range"]),
                  helper.make_node("Mul", ["b_range", const("b_share", 0.05)], ["b_delta"])]
    elif params["kind"] == "gain":
        nodes += [helper.make_node("Mul", [y, const("b_gain", 0.1)], ["b_delta"])]
    else:
        nodes += [helper.make_node("Abs", [y], ["b_abs"]),
                  helper.make_node("ReduceMax", ["b_abs"], ["b_peak"], keepdims=0),
                  helper.make_node("Div", [y, "b_peak"], ["b_unit"]),
                  helper.make_node("Mul", ["b_unit", const("b_freq", 997.0)], ["b_phase"]),
                  helper.make_node("Sin", ["b_phase"], ["b_wave"]),
                  helper.make_node("Mul", ["b_wave", "b_peak"], ["b_noise"]),
                  helper.make_node("Sub", ["b_noise", y], ["b_delta"])]
    nodes += [helper.make_node("Mul", ["b_mask", "b_delta"], ["b_masked"]),
              helper.make_node("Add", [y, "b_masked"], [y_out])]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(Path(out) / "model.onnx"))
    return {"broken": params["kind"]}


def fix_input_shapes(source, out, params, model):
    """Copy the ONNX file with every symbolic input dim fixed at the export inputs' size."""
    import onnx

    from modelparity.models import ModelArtifact

    shapes = {k: v.shape for k, v in ModelArtifact(Path(model)).export_inputs().items()}
    proto = onnx.load(str(Path(source) / "model.onnx"))
    for value in proto.graph.input:
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                dim.dim_value = int(shapes[value.name][index])
    onnx.save(proto, str(Path(out) / "model.onnx"))
    return {"fixed": {k: list(v) for k, v in shapes.items()}}


def rewrite_parent(source, out, params, model):
    """A converter that saves its input back in place (onnx2tf does: shape inference through
    onnx-graphsurgeon), then writes its own output."""
    import onnx

    proto = onnx.load(str(Path(source) / "model.onnx"))
    onnx.save(proto, str(Path(source) / "model.onnx"))
    onnx.save(proto, str(Path(out) / "model.onnx"))
    return {}


def segfault(source, out, params, model):
    ctypes.string_at(0)


def hang(source, out, params, model):
    time.sleep(3600)


class ReshapedLayoutRunner(SavedModelRunner):
    """The classic mix-up: NCHW arrays reshaped, not transposed, into the NHWC shape onnx2tf wants."""

    def run(self, inputs):
        feeds = {}
        for name, value in inputs.items():
            artifact_name = self._layout.description["inputs"][name]["artifact_name"]
            nhwc_shape = (value.shape[0], *value.shape[2:], value.shape[1])
            feeds[artifact_name] = self._tf.constant(value.reshape(nhwc_shape))
        result = self._signature(**feeds)
        return self._layout.from_artifact({k: v.numpy() for k, v in result.items()})


class SlowedRunner(OnnxRuntimeRunner):
    """A deployment that got slower: every call sleeps MODELPARITY_TEST_DELAY seconds more."""

    def timed_call(self, inputs):
        call = super().timed_call(inputs)
        delay = float(os.environ.get("MODELPARITY_TEST_DELAY", "0"))

        def slowed():
            time.sleep(delay)
            return call()
        return slowed


class CrashingRunner(OnnxRuntimeRunner):
    """A runtime with a native bug: running kills the process with SIGSEGV."""

    def run(self, inputs):
        ctypes.string_at(0)


class UntimeableRunner(OnnxRuntimeRunner):
    def timed_call(self, inputs):
        raise NotTimeable("its runtime lives in another process")


class MemoryHogRunner(OnnxRuntimeRunner):
    """Holds params['load_mib'] after loading and allocates params['run_mib'] on every run."""

    def __init__(self, context):
        super().__init__(context)
        self._held = np.ones(context.params["load_mib"] << 20, np.uint8)  # written, so resident
        self._run_mib = context.params["run_mib"]

    def run(self, inputs):
        scratch = np.ones(self._run_mib << 20, np.uint8)
        del scratch
        return super().run(inputs)


def applies_when_asked(machine):
    """Not applicable unless MODELPARITY_TEST_GATED is set: stands for a format one machine has and
    another lacks (bf16 on a CPU with it, CUDA on a GPU machine)."""
    if os.environ.get("MODELPARITY_TEST_GATED"):
        return None
    return "not applicable: MODELPARITY_TEST_GATED unset"


BROKEN_ROWS = ("offset", "gain", "uncorrelated")


def formats(graph, options):
    """Every node that `produces="onnx"` gets ONNX Runtime's runner `-ort` from the built-in
    onnxruntime module (a capability, not a declaration here)."""
    service = HERE.with_name("broken_service.py")
    http = [http_format(graph, "onnx-dynamo-ort", options, "http-bgr",
                        preprocess=f"{service}:preprocess_bgr"),
            http_format(graph, "onnx-dynamo-ort", options, "http-rgbonly",
                        preprocess=f"{service}:preprocess_assuming_rgb"),
            http_format(graph, "onnx-dynamo-ort", options, "http-busy",
                        app=f"{service}:create_app_busy_under_load"),
            http_format(graph, "onnx-dynamo-ort", options, "http-unchecked",
                        app=f"{service}:create_app_without_checks")]
    ort = dict(load=OnnxRuntimeRunner, requires=(ONNXRUNTIME,), params={"level": "all"})
    exported = [Format("perturbed", parent="torch-export", build=f"{HERE}:perturb_exported_program",
                       params={"delta": 0.5}, requires=(TORCH,), produces="exported-program"),
                Format("torch-export-static", build=f"{HERE}:export_without_dynamic_axes",
                       load=ExportedProgramRunner, requires=(TORCH,), produces="exported-program")]
    exported += [*lowered_from("torch-export-perturbed", graph, options),
                 *lowered_from("torch-export-static", graph, options)]
    return http + exported + [
        Format("perturbed", parent="onnx-dynamo", build=f"{HERE}:perturb_one_weight",
               params={"delta": 0.5}, produces="onnx"),
        Format("badscale", parent="onnx-dynamo-int8dyn", build=f"{HERE}:scale_one_weight_scale",
               params={"factor": 4.0}, precision="int8", produces="onnx"),
        *[Format(kind, parent="onnx-dynamo", build=f"{HERE}:break_batched_rows", params={"kind": kind},
                 produces="onnx") for kind in BROKEN_ROWS],
        *[Format(f"ort-{precision}", parent=f"onnx-dynamo-{kind}", precision=precision, **ort)
          for kind in BROKEN_ROWS for precision in ("fp16", "bf16", "int8")],
        Format("fixed", parent="onnx-dynamo", build=f"{HERE}:fix_input_shapes", produces="onnx"),
        Format("ort-declared-static", parent="onnx-dynamo-fixed", fixed_shapes="input shapes fixed "
               "at the export's by design", **ort),
        Format("parent-rewriting", parent="onnx-dynamo", build=f"{HERE}:rewrite_parent", produces="onnx"),
        Format("segfaulting", parent="onnx-dynamo", build=f"{HERE}:segfault", produces="onnx"),
        Format("hanging", parent="onnx-dynamo", build=f"{HERE}:hang", produces="onnx"),
        Format("reshaped", parent="onnx-dynamo-onnx2tf", load=ReshapedLayoutRunner,
               requires=graph["onnx-dynamo-onnx2tf-tf"].requires),
        Format("onnxtf-crashing", parent="onnx-legacy-op14", build="modelparity.formats.onnx_tf:convert",
               params={"worker_script": str(HERE.with_name("crashing_worker.py"))},
               requires=(LEGACY_ENV,), produces="savedmodel"),
        Format("tf", parent="onnx-legacy-op14-onnxtf-crashing", load=OnnxTfRunner, requires=(LEGACY_ENV,)),
        Format("slowed", parent="onnx-dynamo", load=SlowedRunner, requires=(ONNXRUNTIME,)),
        Format("crashing-runtime", parent="onnx-dynamo", load=CrashingRunner, requires=(ONNXRUNTIME,),
               isolate_runtime=True),
        Format("untimeable", parent="onnx-dynamo", load=UntimeableRunner, requires=(ONNXRUNTIME,)),
        Format("hog", parent="onnx-dynamo", load=MemoryHogRunner, requires=(ONNXRUNTIME,),
               params={"load_mib": 300, "run_mib": 200}),
        Format("perturbed", parent="torchscript-libtorch-cpp", build=f"{HERE}:perturb_torchscript",
               params={"delta": 0.5, **program_params("torchscript", "model.ts")},
               load=LibTorchCppRunner, requires=(TORCH, COMPILER),
               times_natively=True),
        Format("ort-gated", parent="onnx-dynamo", applies=applies_when_asked, **ort),
        # OpenVINO computes in bf16 on a CPU that has it unless told f32: declared fp32, no hint
        Format("cpu-nohint", parent="onnx-dynamo-ov-irfp32", load=OpenVinoRunner,
               params={"inference_precision": None}, requires=(OPENVINO,)),
        # bf16 asked for on any CPU (the built-in bf16 format is gated on the CPU having it)
        Format("cpu-bf16-ungated", parent="onnx-dynamo-ov-irfp32", load=OpenVinoRunner, precision="bf16",
               params={"inference_precision": "bf16"}, requires=(OPENVINO,)),
        Format("absent", parent="onnx-dynamo", load=OnnxRuntimeRunner,
               requires=(Requirement("modelparity_absent_backend",
                                     "pip install modelparity-absent-backend"),)),
    ]
