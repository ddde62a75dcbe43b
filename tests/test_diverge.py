"""The first-diverging-node finder on small hand-made graphs: a perturbed node is named, an FP16
overflow is named at the tensor where it starts, identical graphs have no diverging node."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelparity.diverge import first_divergence, main

RNG = np.random.default_rng(0)
WEIGHTS = {name: RNG.standard_normal((8, 8)).astype(np.float32) for name in ("w1", "w2", "w3")}
INPUTS = {"x": RNG.standard_normal((2, 8)).astype(np.float32)}


def mlp(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x -> MatMul(w1) -> Relu -> MatMul(w2) -> Relu -> MatMul(w3) -> y, nodes named after their step."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="second"),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("MatMul", ["a2", "w3"], ["y"], name="third")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_the_perturbed_node_is_named_with_its_inputs_in_tolerance(tmp_path):
    perturbed = dict(WEIGHTS, w2=WEIGHTS["w2"] * 1.1)
    reference = save(mlp(WEIGHTS), tmp_path / "reference.onnx")
    candidate = save(mlp(perturbed), tmp_path / "candidate.onnx")
    divergence = first_divergence(reference, candidate, INPUTS, atol=1e-4, rtol=1e-3)
    assert (divergence.node, divergence.op_type) == ("second", "MatMul")
    assert [e.name for e in divergence.inputs] == ["a1"] and divergence.inputs[0].within
    assert not divergence.output.within and divergence.output.max_abs > 0.01
    assert "first diverging node: second (MatMul), output h2" in divergence.describe()


def test_identical_graphs_have_no_diverging_node(tmp_path):
    path = save(mlp(WEIGHTS), tmp_path / "same.onnx")
    divergence = first_divergence(path, path, INPUTS, atol=1e-6, rtol=1e-6)
    assert divergence.node is None and divergence.compared == 5
    assert "no diverging node" in divergence.describe()


def test_fp16_overflow_names_the_first_tensor_that_became_inf(tmp_path):
    """x*300 squared exceeds FP16's 65504 although the output, sqrt(.)/300, is small: the FP16 file
    (onnxconverter-common, as the fp16 format makes it) stores that square as an Inf."""
    from onnxconverter_common import float16

    scale = numpy_helper.from_array(np.array(300.0, np.float32), "scale")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"], name="scale_up"),
             helper.make_node("Mul", ["scaled", "scaled"], ["squared"], name="square"),
             helper.make_node("Add", ["squared", "one"], ["shifted"], name="shift"),
             helper.make_node("Sqrt", ["shifted"], ["root"], name="root"),
             helper.make_node("Div", ["root", "scale"], ["y"], name="scale_down")]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph(nodes, "overflow", [x_info],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [scale, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    reference = save(model, tmp_path / "fp32.onnx")
    candidate = save(float16.convert_float_to_float16(model, keep_io_types=True), tmp_path / "fp16.onnx")
    inputs = {"x": np.full((2, 8), 3.0, np.float32)}
    divergence = first_divergence(reference, candidate, inputs, atol=2e-2, rtol=1e-2)
    assert (divergence.node, divergence.op_type) == ("square", "Mul")
    assert [e.name for e in divergence.overflows][:2] == ["squared", "shifted"]
    assert "FP16 overflow, first tensors that are Inf/NaN where FP32 is finite: squared (16 elements)" \
        in divergence.describe()


def test_command_exits_1_on_divergence_and_writes_the_trail(tmp_path, capsys):
    reference = save(mlp(WEIGHTS), tmp_path / "reference.onnx")
    candidate = save(mlp(dict(WEIGHTS, w3=-WEIGHTS["w3"])), tmp_path / "candidate.onnx")
    np.savez(tmp_path / "inputs.npz", **INPUTS)
    status = main([reference, candidate, "--inputs", str(tmp_path / "inputs.npz"),
                   "--json", str(tmp_path / "trail.json")])
    assert status == 1 and "third (MatMul)" in capsys.readouterr().out
    trail = json.loads((tmp_path / "trail.json").read_text())["trail"]
    assert [t["name"] for t in trail] == ["h1", "a1", "h2", "a2", "y"]
    assert main([reference, reference]) == 0  # seeded random inputs when none are given


def test_command_names_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.onnx"), str(tmp_path / "nope.onnx")])
    assert exit_info.value.code == 2
    assert "nope.onnx does not exist" in capsys.readouterr().err
