"""Formats are discovered and ordered by parent: a new format is one file, and it appears in every
suite; a format says what it can do (fields), no suite asks what class its runner is."""

import textwrap

import pytest

import modelparity.formats
from modelparity.formats import FormatGraphError, build_graph
from tests.conftest import ROOT, TINY

ONE_FILE = textwrap.dedent('''
    """A user's runtime setting as one file: ONNX Runtime at the basic level with one thread."""
    from modelparity.formats.base import ONNXRUNTIME, Format
    from modelparity.formats.onnxruntime import OnnxRuntimeRunner


    def formats(graph, options):
        return [Format("ort-basic-seq1", parent="onnx-dynamo", load=OnnxRuntimeRunner,
                       params={"level": "basic", "intra_op_threads": 1}, requires=(ONNXRUNTIME,))]
''')


@pytest.fixture
def one_more_format_module(tmp_path, monkeypatch):
    (tmp_path / "zz_one_file_format.py").write_text(ONE_FILE)
    monkeypatch.setattr(modelparity.formats, "__path__", [*modelparity.formats.__path__, str(tmp_path)])


def test_a_format_file_in_the_package_joins_the_graph_under_its_parent(one_more_format_module):
    graph = build_graph({"opsets": [17]})
    chain = [n.id for n in graph.chain("onnx-dynamo-ort-basic-seq1")]
    assert chain == ["onnx-dynamo", "onnx-dynamo-ort-basic-seq1"]


@pytest.mark.slow
def test_a_format_added_as_one_file_appears_in_every_suite(one_more_format_module, pytester, tmp_path):
    suites = [str(ROOT / "suites" / name) for name in ("parity", "dynamic", "batch", "latency", "opset")]
    result = pytester.runpytest_inprocess(
        *suites, "--collect-only", "-q", "-p", "no:cacheprovider", "--model", f"{TINY}:build",
        "--formats", "onnx-dynamo-ort-basic-seq1", "--store", str(tmp_path / "store"),
        "--report-dir", str(tmp_path))
    collected = result.stdout.str()
    for test_id in ("test_parity[tiny-onnx-dynamo-ort-basic-seq1-b1]",
                    "test_dynamic_axes[tiny-onnx-dynamo-ort-basic-seq1-dynamic]",
                    "test_batch_consistency[tiny-onnx-dynamo-ort-basic-seq1-batch3]",
                    "test_latency[tiny-onnx-dynamo-ort-basic-seq1-b1]",
                    "test_opset_regression[tiny-onnx-dynamo-ort-basic-seq1-opset]"):
        assert test_id in collected, f"{test_id} not collected:\n{collected}"


def test_two_modules_declaring_one_id_is_an_error_naming_both(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(textwrap.dedent('''
        from modelparity.formats.base import ONNXRUNTIME, Format
        from modelparity.formats.onnxruntime import OnnxRuntimeRunner

        def formats(graph, options):
            return [Format("ort", parent="onnx-dynamo", load=OnnxRuntimeRunner, requires=(ONNXRUNTIME,))]
    '''))
    with pytest.raises(FormatGraphError, match="declared by both modelparity.formats.onnxruntime and"):
        build_graph({"opsets": [17]}, [str(clash)])


def test_a_plugin_whose_parent_never_comes_is_named(tmp_path):
    orphan = tmp_path / "orphan.py"
    orphan.write_text(textwrap.dedent('''
        def formats(graph, options):
            return [graph["no-such-format"]]
    '''))
    with pytest.raises(FormatGraphError, match="needs format 'no-such-format', which no module declares"):
        build_graph({"opsets": [17]}, [str(orphan)])


def test_capabilities_are_fields_of_the_format():
    graph = build_graph({"opsets": [17]})
    assert graph.nodes["onnx-dynamo-ort-http"].serves_http and not graph.nodes["onnx-dynamo-ort"].serves_http
    assert graph.nodes["torchscript-libtorch-cpp"].times_natively
    assert graph.provider("onnx-dynamo-ort-trt") == "tensorrt" and graph.provider("onnx-dynamo-ort") == "cpu"
    assert graph.provider("eager-cuda") == "cuda"
    assert graph.provider_kinds() == ["cpu", "cuda", "tensorrt"]
