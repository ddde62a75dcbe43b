"""OpenVINO INT8 through NNCF post-training quantisation (`nncf.quantize`) of the FP32 IR converted from
the primary ONNX file, calibrated on the model's own calibration inputs (the same ones ONNX Runtime's
static quantizer uses), one sample at a time. Compiled on the CPU with the f32 hint, so that what is
not quantised runs in FP32 whatever the CPU's default.

NNCF's defaults are kept (preset PERFORMANCE: symmetric weights and activations; the target device
ANY) and written in the build info, with how many FakeQuantize operations it inserted: a quantiser
that inserted none fails the build, since the check would then be FP32 in disguise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelparity.formats.base import OPENVINO, Format, Requirement
from modelparity.formats.onnx_export import PRIMARY_ONNX
from modelparity.formats.openvino import OpenVinoRunner
from modelparity.models import ModelArtifact

NNCF = Requirement("nncf", "pip install 'modelparity[openvino]'")
PARENT = f"{PRIMARY_ONNX}-ov-irfp32"


def quantize(source: str, out: str, params: Mapping[str, Any], model: str) -> dict[str, Any]:
    import nncf
    import openvino as ov

    samples = ModelArtifact(Path(model)).calibration_samples()
    fp32 = ov.Core().read_model(str(Path(source) / "model.xml"))
    quantized = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=len(samples))
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    if not fake_quantize:
        raise RuntimeError(f"nncf.quantize inserted no FakeQuantize into {source}/model.xml")
    ov.save_model(quantized, str(Path(out) / "model.xml"), compress_to_fp16=False)
    return {"file": "model.xml", "nncf": nncf.__version__, "openvino": ov.__version__,
            "preset": "PERFORMANCE (NNCF default)", "calibration_samples": len(samples),
            "fake_quantize_ops": fake_quantize}


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    if PARENT not in graph:
        return []
    requires = (OPENVINO, NNCF)
    return [
        Format("nncfint8", parent=PARENT, build="modelparity.formats.openvino_int8:quantize",
               precision="int8", requires=requires, produces="openvino",
               description="nncf.quantize of the FP32 IR, calibrated on the model's inputs"),
        Format("cpu", parent=f"{PARENT}-nncfint8", load=OpenVinoRunner, precision="int8",
               params={"inference_precision": "f32"}, requires=requires,
               description="OpenVINO CPU, INT8 where NNCF quantised, f32 elsewhere"),
    ]
