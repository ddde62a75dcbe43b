"""The HTTP service a team puts in front of a model: a FastAPI application over any built runner.

    python -m modelparity.serve CONFIG.json [--port N]

CONFIG names the format graph's recipe, the runner's format id and artifact, and the model's root
artifact (its declared inputs, and its image pre-processing unless CONFIG names the service's own
`preprocess`); `app` may name another application factory (a team's own service). Endpoints:

- `GET /health`: the format and what its runtime reports;
- `POST /v1/infer`: named arrays, as JSON (`{"inputs": {name: {"shape", "dtype", "data"}}}`) or as an
  .npz body (`application/x-npz`), checked against the model's declared inputs; answers in the same
  encoding (JSON floats round-trip float32 exactly);
- `POST /predict`: one image upload (multipart field `file`), pre-processed by the model spec's own
  `preprocess` (the function the harness applies on the reference side too), answered as JSON;
- `/openapi.json`.

Every bad request (not an image, a truncated or empty image, a body over MAX_BODY_BYTES, a wrong
content type, a tensor of the wrong name, shape or dtype) is a 4xx with `{"error": ...}` naming the
problem; an exception in the runtime is a 500 with its message, which the harness's tests treat as a
failure.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request), which are
# imported inside create_app, at definition time.
import argparse
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

MAX_BODY_BYTES = 32 * 1024 * 1024  # resnet18 at batch 32 as .npz is 19 MB
NPZ = "application/x-npz"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def encode(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {name: {"shape": list(v.shape), "dtype": str(v.dtype), "data": v.ravel().tolist()}
            for name, v in arrays.items()}


def decode(payload: Any) -> dict[str, np.ndarray]:
    """{"inputs": {name: {"shape", "dtype", "data"}}} -> arrays; BadRequest(422) naming what is wrong."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), dict):
        raise BadRequest(422, 'the body must be {"inputs": {name: {"shape": [...], "dtype": "...", '
                              '"data": [...]}}}')
    arrays = {}
    for name, item in payload["inputs"].items():
        try:
            arrays[name] = np.asarray(item["data"], dtype=np.dtype(item["dtype"])).reshape(item["shape"])
        except (KeyError, TypeError, ValueError) as error:
            raise BadRequest(422, f"input {name!r}: {type(error).__name__}: {error}") from None
    return arrays


class Service:
    """The runner and the model's declared inputs, loaded once per process."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from modelparity.formats import build_graph
        from modelparity.formats.base import LoadContext
        from modelparity.models import ModelArtifact
        from modelparity.references import import_target

        graph = build_graph(config["recipe"]["options"], config["recipe"]["plugins"])
        node = graph.nodes[config["format_id"]]
        assert node.load is not None
        self.format_id = config["format_id"]
        self.spec = ModelArtifact(Path(config["model_artifact"])).interface()
        # The service's own pre-processing when the deployment has one (the harness compares it with
        # the spec's, i.e. training's); by default the spec's.
        self.preprocess = (import_target(config["preprocess"]) if config.get("preprocess")
                           else self.spec.preprocess)
        self.runner = node.load(LoadContext(Path(config["artifact"]), node.params, self.spec.input_names,
                                            self.spec.output_names, Path(config["model_artifact"])))

    def check(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Names, dtypes and shapes against the spec (dynamic axes within their ranges)."""
        expected = self.spec.input_names
        if sorted(arrays) != sorted(expected):
            raise BadRequest(422, f"inputs {sorted(arrays)} given; the model takes {expected}")
        for name, value in arrays.items():
            example = self.spec.example_inputs[name]
            if value.dtype != example.dtype:
                raise BadRequest(422, f"input {name!r} has dtype {value.dtype}; the model takes "
                                      f"{example.dtype}")
            if value.ndim != example.ndim:
                raise BadRequest(422, f"input {name!r} has shape {list(value.shape)}; the model takes "
                                      f"{example.ndim} dimensions like {list(example.shape)}")
            dynamic = self.spec.dynamic_axes.get(name, {})
            for dim, size in enumerate(value.shape):
                axis = dynamic.get(dim)
                if axis is None and size != example.shape[dim]:
                    raise BadRequest(422, f"input {name!r} dim {dim} is {size}; the model takes "
                                          f"{example.shape[dim]} there")
                if axis is not None and not self.spec.axis_ranges[axis].allows(size):
                    bounds = self.spec.axis_ranges[axis]
                    raise BadRequest(422, f"input {name!r} dim {dim} ({axis}) is {size}; the model "
                                          f"takes {bounds.min}..{bounds.max}")

    def infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check(arrays)
        return self.runner.run(arrays)

    def predict(self, image_bytes: bytes) -> dict[str, Any]:
        from PIL import Image, UnidentifiedImageError

        if self.preprocess is None:
            raise BadRequest(404, f"model {self.spec.name!r} declares no image pre-processing "
                                  "(ModelSpec.preprocess); use /v1/infer")
        if not image_bytes:
            raise BadRequest(400, "the upload is empty")
        try:
            image = Image.open(io.BytesIO(image_bytes))
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise BadRequest(400, f"the upload is not a readable image: {type(error).__name__}: {error}"
                             ) from None
        if image.width == 0 or image.height == 0:
            raise BadRequest(400, f"the image is {image.width}x{image.height}")
        outputs = self.infer(self.preprocess(image))
        answer = {"outputs": encode(outputs), "image": {"mode": image.mode, "size": list(image.size)}}
        for name in self.spec.classifier_outputs:
            answer.setdefault("top1", {})[name] = int(outputs[name].reshape(-1).argmax())
        return answer


def request_bodies(input_names: list[str]) -> dict[str, dict[str, Any]]:
    """The OpenAPI requestBody of /v1/infer and /predict: the endpoints read their bodies themselves
    (size limit, two encodings), so FastAPI cannot infer them; declared, they are what clients and
    a schemathesis run generate requests from."""
    tensor = {"type": "object", "required": ["shape", "dtype", "data"], "properties": {
        "shape": {"type": "array", "items": {"type": "integer"}},
        "dtype": {"type": "string", "examples": ["float32", "int64"]},
        "data": {"type": "array", "items": {"type": "number"}}}}
    inputs = {"type": "object", "required": input_names,
              "properties": {name: tensor for name in input_names}}
    return {
        "infer": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"],
                                            "properties": {"inputs": inputs}}},
            NPZ: {"schema": {"type": "string", "format": "binary"}}}},
        "predict": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}}}},
    }


def create_app(config: Mapping[str, Any]) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    service = Service(config)
    bodies = request_bodies(service.spec.input_names)
    app = FastAPI(title="modelparity service", description=f"{service.spec.name} on {service.format_id}")

    async def body_of(request: Request) -> bytes:
        """The body, at most MAX_BODY_BYTES. A longer one is read to its end and discarded before the
        413, so that the client reads the answer instead of a connection reset."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"the body is {size} bytes; the limit is {MAX_BODY_BYTES}")
        return b"".join(chunks)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.spec.name, "format": service.format_id,
                "facts": json.loads(json.dumps(service.runner.facts, default=str))}

    @app.post("/v1/infer", openapi_extra={"requestBody": bodies["infer"]},
              responses={422: {"description": "inputs of the wrong name, shape or dtype"},
                         413: {"description": "body too large"},
                         415: {"description": "neither JSON nor .npz"}})
    async def infer(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        body = await body_of(request)
        if kind == NPZ:
            try:
                with np.load(io.BytesIO(body), allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
                raise BadRequest(422, f"the body is not a readable .npz: {type(error).__name__}: {error}"
                                 ) from None
            buffer = io.BytesIO()
            np.savez(buffer, **service.infer(arrays))
            return Response(buffer.getvalue(), media_type=NPZ)
        if kind == "application/json":
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise BadRequest(400, f"the body is not valid JSON: {error}") from None
            return JSONResponse({"outputs": encode(service.infer(decode(payload)))})
        raise BadRequest(415, f"content type {kind or '(none)'!r}; send application/json or {NPZ}")

    @app.post("/predict", openapi_extra={"requestBody": bodies["predict"]},
              responses={400: {"description": "not a readable image"},
                         404: {"description": "the model takes no images"},
                         413: {"description": "body too large"},
                         415: {"description": "not a multipart upload"},
                         422: {"description": "no file in the multipart field 'file'"}})
    async def predict(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            raise BadRequest(415, f"content type {kind or '(none)'!r}; upload the image as multipart "
                                  "form field 'file'")
        body = await body_of(request)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}
        form = await Request(request.scope, replay).form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest(422, "no file in the multipart field 'file'")
        return JSONResponse(service.predict(await upload.read()))

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m modelparity.serve")
    parser.add_argument("config", type=Path)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    from modelparity.references import import_target

    config = json.loads(args.config.read_text())
    factory = import_target(config.get("app") or "modelparity.serve:create_app")
    uvicorn.run(factory(config), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
