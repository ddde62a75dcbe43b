"""The HTTP service's own checks, beyond the tensor parity every format gets:

- images: real uploads to POST /predict, compared with torch eager and with the direct runner on the
  same decoded image through the same `ModelSpec.preprocess` (so a service whose pre-processing, or
  whose runner, differs from training is caught);
- error handling: malformed requests must answer a 4xx with a JSON `error`, never a 5xx, and the
  service must keep answering afterwards.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.checks.compare import Comparison, compare
from modelparity.checks.tolerance import PROFILES
from modelparity.images import upload_images, zero_size_png

LARGE_BODY = 50 * 1024 * 1024


def _decoded(answer: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(item["data"], dtype=item["dtype"]).reshape(item["shape"])
            for name, item in answer.json()["outputs"].items()}


Outputs = dict[str, np.ndarray]


def image_parity(client: Any, spec: Any, against_torch: Callable[[Outputs, Outputs, str], Comparison],
                 direct: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every upload image through /predict against torch eager (`against_torch(inputs, served,
    label)`: the format's tolerance, as in every suite) and the direct runner (fp32 tolerance: the
    service runs the very same runner)."""
    from PIL import Image

    rows, problems = [], []
    for name, content in upload_images().items():
        kind = "image/jpeg" if name.endswith(".jpg") else "image/png"
        answer = client.post("/predict", files={"file": (name, content, kind)})
        if answer.status_code != 200:
            problems.append(f"{name}: /predict answered {answer.status_code}: {answer.text[:500]}")
            rows.append({"image": name, "status": answer.status_code})
            continue
        inputs = spec.preprocess(Image.open(io.BytesIO(content)))
        served = _decoded(answer)
        vs_torch = against_torch(inputs, served, f"{name} via HTTP vs torch")
        against_direct = compare(direct.run(inputs), served, lambda _: PROFILES["fp32"],
                                 f"{name} via HTTP vs the direct runner", spec.classifier_outputs)
        rows.append({"image": name, "status": 200, "mode_size": answer.json()["image"],
                     "max_abs_vs_torch": vs_torch.worst_abs,
                     "max_abs_vs_direct": against_direct.worst_abs,
                     "passed": vs_torch.passed and against_direct.passed})
        problems += [c.message() for c in (vs_torch, against_direct) if not c.passed]
    return rows, problems


@dataclass(frozen=True)
class BadRequestCase:
    name: str
    method: str
    path: str
    kwargs: Mapping[str, Any]


def bad_requests(spec: Any) -> list[BadRequestCase]:
    """Malformed requests for the model's endpoints."""
    png = upload_images()["flower-rgb.png"]
    example = {name: value for name, value in spec.example_inputs.items()}
    first = spec.input_names[0]

    def infer_json(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {"content": json.dumps({"inputs": {n: {"shape": list(v.shape), "dtype": str(v.dtype),
                                                       "data": v.ravel().tolist()}
                                                   for n, v in inputs.items()}}),
                "headers": {"content-type": "application/json"}}

    squeezed = {**example, first: example[first][0]}  # the first dimension dropped
    widened = {**example, first: example[first].astype(np.float64 if example[first].dtype != np.float64
                                                        else np.float32)}
    renamed = {f"{first}_typo": example[first], **{n: v for n, v in example.items() if n != first}}
    cases = [
        BadRequestCase("upload that is not an image", "post", "/predict",
                       {"files": {"file": ("notes.txt", b"hello, not an image", "text/plain")}}),
        BadRequestCase("truncated PNG", "post", "/predict",
                       {"files": {"file": ("cut.png", png[: len(png) // 3], "image/png")}}),
        BadRequestCase("0x0 PNG", "post", "/predict", {"files": {"file": ("empty.png", zero_size_png(),
                                                                           "image/png")}}),
        BadRequestCase("empty upload", "post", "/predict",
                       {"files": {"file": ("none.png", b"", "image/png")}}),
        BadRequestCase("50 MB body", "post", "/predict",
                       {"files": {"file": ("huge.png", b"\0" * LARGE_BODY, "image/png")}}),
        BadRequestCase("JSON body to /predict", "post", "/predict", {"json": {"image": "x"}}),
        BadRequestCase("multipart without 'file'", "post", "/predict", {"files": {"other": ("a", b"x")}}),
        BadRequestCase("tensor with a dimension missing", "post", "/v1/infer", infer_json(squeezed)),
        BadRequestCase("tensor of the wrong dtype", "post", "/v1/infer", infer_json(widened)),
        BadRequestCase("input of the wrong name", "post", "/v1/infer", infer_json(renamed)),
        BadRequestCase("JSON that does not parse", "post", "/v1/infer",
                       {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        BadRequestCase("JSON of the wrong structure", "post", "/v1/infer", {"json": {"data": [1, 2, 3]}}),
        BadRequestCase("garbage .npz", "post", "/v1/infer",
                       {"content": b"PK\x03\x04garbage", "headers": {"content-type": "application/x-npz"}}),
        BadRequestCase("text/plain body", "post", "/v1/infer",
                       {"content": b"1,2,3", "headers": {"content-type": "text/plain"}}),
    ]
    if spec.batch_axis is not None:
        too_many = spec.axis_ranges[spec.batch_axis].max + 1
        cases.append(BadRequestCase(f"batch {too_many}, over the declared range", "post", "/v1/infer",
                                    infer_json(spec.inputs_for({spec.batch_axis: too_many}, seed=0))))
    return cases


def error_handling(client: Any, spec: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Each bad request's status and error; problems: any non-4xx, a 4xx without a JSON error, or a
    service that stops answering."""
    import httpx

    rows, problems = [], []
    for case in bad_requests(spec):
        try:
            answer = getattr(client, case.method)(case.path, **case.kwargs)
        except httpx.TransportError as error:  # e.g. a connection the service closed after a 500
            rows.append({"request": case.name, "path": case.path, "status": "no answer", "error": str(error)})
            problems.append(f"{case.name} ({case.path}): no answer: {type(error).__name__}: {error}")
            continue
        try:
            error = answer.json().get("error") or answer.json().get("detail")
        except ValueError:
            error = None
        rows.append({"request": case.name, "path": case.path, "status": answer.status_code,
                     "error": str(error)[:300] if error else answer.text[:300]})
        if not 400 <= answer.status_code < 500:
            problems.append(f"{case.name} ({case.path}): answered {answer.status_code}, not a 4xx: "
                            f"{answer.text[:500]}")
        elif not error:
            problems.append(f"{case.name} ({case.path}): {answer.status_code} without a JSON error")
    try:
        health = client.get("/health")
    except httpx.TransportError:
        health = client.get("/health")  # a fresh connection, if the last answer closed the old one
    rows.append({"request": "GET /health afterwards", "path": "/health", "status": health.status_code,
                 "error": ""})
    if health.status_code != 200:
        problems.append(f"the service stopped answering after the bad requests: /health {health.status_code}")
    return rows, problems
