"""A stand-in for onnx_tf_worker.py that segfaults on its first request, run by the onnx-tf
environment's Python: a converter crash inside the worker must fail only its own checks."""

import ctypes
import sys

sys.stdin.readline()
print("about to crash", file=sys.stderr, flush=True)
ctypes.string_at(0)
