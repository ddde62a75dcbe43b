"""Expected failures conditioned on machine facts: parsed with the file named, applied only where the
facts hold (the machine of the other kind is reasoned about here, with its flags written out)."""

import pytest

from modelparity.checks.expectations import ExpectationError, machine_facts, parse_expected_failures

AVX2_EPYC = machine_facts({"avx2", "fma", "f16c"}, "x86_64", has_gpu=False)
AVX512_EPYC = machine_facts({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "x86_64", has_gpu=False)
AMX_XEON = machine_facts({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"},
                         "x86_64", has_gpu=False)
GPU_HOST = machine_facts({"avx2"}, "x86_64", has_gpu=True)


def _entry(**extra):
    return parse_expected_failures([{"match": "m-f-*", "reason": "measured", **extra}], "pyproject.toml")[0]


@pytest.mark.parametrize("when, holds_on", [
    ([], {"avx2", "avx512", "amx", "gpu"}),
    (["!avx512_vnni", "!avx_vnni"], {"avx2", "gpu"}),
    (["avx512_bf16", "!amx_bf16"], {"avx512"}),
    (["amx_int8"], {"amx"}),
    (["gpu"], {"gpu"}),
    ("!gpu", {"avx2", "avx512", "amx"}),
])
def test_conditions_hold_only_on_machines_with_those_facts(when, holds_on):
    entry = _entry(when=when)
    machines = {"avx2": AVX2_EPYC, "avx512": AVX512_EPYC, "amx": AMX_XEON, "gpu": GPU_HOST}
    assert {name for name, facts in machines.items() if not entry.unmet(facts)} == holds_on


def test_unmet_conditions_are_named():
    assert _entry(when=["!avx512_vnni", "x86_64"]).unmet(AMX_XEON) == ["!avx512_vnni"]
    assert _entry(when=["avx512_vnni"], strict=False).describe() == "m-f-* when avx512_vnni (not strict)"


def test_a_list_of_globs_matches_any_of_them():
    entry = _entry(match=["a-onnx-*", "b-*-dynamic"])
    assert entry.matches("a-onnx-ort-b1") and entry.matches("b-tflite-dynamic")
    assert not entry.matches("b-tflite-b1")
    assert entry.describe() == "a-onnx-*, b-*-dynamic"


@pytest.mark.parametrize("entry, message", [
    ({"match": "x", "reason": "r", "whne": ["gpu"]}, "unknown keys ['whne']"),
    ({"match": "x"}, "needs 'match' (a test id glob, or a list of them) and a written 'reason'"),
    ({"match": ["x", ""], "reason": "r"}, "needs 'match' (a test id glob, or a list of them)"),
    ({"match": "x", "reason": "r", "when": ["AVX 512"]}, "'when' takes machine facts"),
    ({"match": "x", "reason": "r", "strict": "no"}, "'strict' is true or false"),
])
def test_malformed_entries_name_the_file(entry, message):
    with pytest.raises(ExpectationError, match="pyproject.toml, expected_failure entry 1") as error:
        parse_expected_failures([entry], "pyproject.toml")
    assert message in str(error.value)
