"""Deliberately wrong HTTP services, to prove the HTTP checks fail: pre-processing that differs from
the model spec's (BGR instead of RGB), and a service that skips input validation (a wrong tensor then
reaches the runtime and answers 500)."""

import numpy as np

from modelparity import serve

SIDE = 16  # the tiny model's image side (tests/models/tiny_model.py)


def preprocess_bgr(image):
    """The tiny model's pre-processing with the colour channels reversed: the classic OpenCV mix-up."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32) / 255
    return {"image": rgb[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32).copy()}


def create_app_without_checks(config):
    """modelparity.serve's application with Service.check disabled."""
    serve.Service.check = lambda self, arrays: None
    return serve.create_app(config)
