"""modelparity: conformance and parity checks for the formats a PyTorch model is deployed in.

The engine (this package) does not import pytest; the suites drive it. A user model is a function
returning a ModelSpec.
"""

from modelparity.spec import AxisRange, ModelSpec, SpecError

__all__ = ["AxisRange", "ModelSpec", "SpecError"]
