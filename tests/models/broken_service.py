"""Deliberately wrong HTTP services, to prove the HTTP checks fail: pre-processing that differs from
the model spec's (BGR instead of RGB, or no conversion to RGB at all), and a service that skips input
validation (a wrong tensor then reaches the runtime and answers 500)."""

import numpy as np

from modelparity import serve

SIDE = 16  # the tiny model's image side (tests/models/tiny_model.py)


def preprocess_bgr(image):
    """The tiny model's pre-processing with the colour channels reversed: the classic OpenCV mix-up."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), np.float32) / 255
    return {"image": rgb[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32).copy()}


def preprocess_assuming_rgb(image):
    """The tiny model's pre-processing without the mode conversion: right for the RGB photos it was
    tried with; a grayscale or palette upload becomes an array of another rank, and the service
    answers 500."""
    rgb = np.asarray(image.resize((SIDE, SIDE)), np.float32) / 255
    return {"image": rgb.transpose(2, 0, 1)[None].astype(np.float32).copy()}


def create_app_without_checks(config):
    """modelparity.serve's application with Service.check disabled."""
    serve.Service.check = lambda self, arrays: None
    return serve.create_app(config)


def create_app_busy_under_load(config):
    """modelparity.serve's application behind a guard that answers 503 while another request is in
    flight: it passes every check that sends one request at a time, and fails under load."""
    from fastapi.responses import JSONResponse

    app = serve.create_app(config)
    in_flight = [0]

    @app.middleware("http")
    async def one_at_a_time(request, call_next):
        if in_flight[0]:
            return JSONResponse({"error": "busy"}, status_code=503)
        in_flight[0] += 1
        try:
            return await call_next(request)
        finally:
            in_flight[0] -= 1
    return app
