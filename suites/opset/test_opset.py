"""Every ONNX-derived format of every selected model against a committed baseline (--compare-baseline
NAME) and against the same chain at the other selected opsets; --save-baseline NAME writes the
baseline (README, "Opset and runtime upgrades")."""


def test_opset_regression(opset_check, enact):
    enact(opset_check)
