"""Every reduced-precision format (fp16, bf16, int8) of every selected model, over a whole data set:
accuracy and changed predictions against torch eager FP32, gated per precision (README, "Precision
drift")."""

import pytest

pytestmark = pytest.mark.filterwarnings("default")


def test_precision_drift(precision_check):
    precision_check()
