"""The built-in custom-op model with a deliberately wrong ONNX Runtime kernel: the loop over the
elements stops one short (the classic off-by-one), so the last element of every activation stays 0."""

import numpy as np

from modelparity.custom_ops import CustomOp, python_kernel
from modelparity.zoo import custom_op


def off_by_one_kernel(x, **attributes):
    flat = x.reshape(-1)
    out = np.zeros_like(flat)
    for start in range(0, flat.size - 1, 4096):  # `size - 1`: the last element is never computed
        stop = min(start + 4096, flat.size - 1)
        out[start:stop] = custom_op.scaled_silu_kernel(flat[start:stop], **attributes)
    return out.reshape(x.shape)


def off_by_one_library():
    return python_kernel("ScaledSilu", off_by_one_kernel, {"alpha": float})


OFF_BY_ONE = CustomOp(
    torch_op=custom_op.SCALED_SILU.torch_op, onnx_op=custom_op.SCALED_SILU.onnx_op,
    onnx_schema=custom_op.scaled_silu_schema, legacy_symbolic=custom_op.scaled_silu_symbolic,
    dynamo_translation=custom_op.scaled_silu_translation, onnxruntime_library=off_by_one_library)


def build():
    spec = custom_op.scaled_silu_cnn(OFF_BY_ONE)
    spec.name = "scaled_silu_off_by_one"
    return spec
