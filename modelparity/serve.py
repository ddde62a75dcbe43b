"""The HTTP service a team puts in front of a model: a FastAPI application over any built runner.

    python -m modelparity.serve CONFIG.json [--port N]

CONFIG names the format graph's recipe, the runner's format id and artifact, and the model's root
artifact (its declared inputs, and its image pre-processing unless CONFIG names the service's own
`preprocess`); `app` may name another application factory (a team's own service); `limits` may set
any field of `modelparity.serve_inputs.Limits`. Endpoints:

- `GET /health`: the format and what its runtime reports;
- `POST /v1/infer`: named arrays, as JSON (`{"inputs": {name: {"shape", "dtype", "data"}}}`) or as an
  .npz body (`application/x-npz`), checked against the model's declared inputs; answers in the same
  encoding (JSON floats round-trip float32 exactly; NaN and ±Inf as below);
- `POST /predict`: one image upload (multipart field `file`), pre-processed by the model spec's own
  `preprocess` (the function the harness applies on the reference side too), answered as JSON;
- `/openapi.json`.

Every bad request (not an image, a truncated or empty image, a body over its limit, a wrong content
type, a tensor of the wrong name, shape or dtype, an image or tensor larger than the limits, JSON
nested too deep, a NaN or infinite input) is a 4xx with `{"error": ...}` naming the problem and what
is accepted (modelparity.serve_inputs decodes and refuses, within the limits); decoding and inference
run in the threadpool, so /health answers while they do.

No answer is a bare 500. An output holding NaN or ±Inf (for finite inputs) is answered 200: in JSON
those values are the strings "NaN", "Infinity" and "-Infinity" (the reports' rule), the answer's
`non_finite` lists the outputs holding them, and the header X-Non-Finite-Outputs names them (in .npz
answers too, which carry the values as they are). Any other exception (the runtime's, a service's
own pre-processing) is a 500 with `{"error": "Type: message", "type", "message"}`, which the
harness's tests treat as a failure.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request), which are
# imported inside create_app, at definition time.
import argparse
import io
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.report.files import jsonable
from modelparity.serve_inputs import (
    BadRequest,
    Declared,
    InputDecoder,
    Limits,
    check_inputs,
    open_image,
    refuse_non_finite,
)

NPZ = "application/x-npz"
NON_FINITE_HEADER = "X-Non-Finite-Outputs"


def non_finite_outputs(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The names of the outputs holding NaN or an infinity."""
    return [name for name, value in arrays.items()
            if value.dtype.kind in "fc" and not np.isfinite(value).all()]


def encode(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Named arrays as JSON; NaN and ±Inf, which JSON has no numbers for, as the strings "NaN",
    "Infinity" and "-Infinity" (the reports' rule, report.files.jsonable)."""
    bad = non_finite_outputs(arrays)
    return {name: {"shape": list(v.shape), "dtype": str(v.dtype),
                   "data": jsonable(v.ravel().tolist()) if name in bad else v.ravel().tolist()}
            for name, v in arrays.items()}


class Service:
    """The runner and the model's declared inputs, loaded once per process."""

    def __init__(self, config: Mapping[str, Any], limits: Limits | None = None) -> None:
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
        self._one_at_a_time = threading.Lock()
        self.limits = limits or Limits.of(config.get("limits") or {})
        self.inputs = InputDecoder(self.spec, self.limits, check=self.check)

    def check(self, arrays: Mapping[str, np.ndarray | Declared]) -> None:
        """Names, dtypes and shapes against the spec; a service without validation replaces it."""
        check_inputs(self.spec, arrays)

    def infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference at a time, as when the endpoints ran on the event loop: requests decode in
        parallel, but not every runner is thread-safe (OpenVINO's runner reuses one infer request)."""
        self.check(arrays)
        if not self.limits.allow_non_finite:
            refuse_non_finite(arrays)
        with self._one_at_a_time:
            return self.runner.run(arrays)

    def predict(self, image_bytes: bytes) -> dict[str, Any]:
        if self.preprocess is None:
            raise BadRequest(404, f"model {self.spec.name!r} declares no image pre-processing "
                                  "(ModelSpec.preprocess); use /v1/infer")
        image = open_image(image_bytes, self.limits.max_image_pixels)
        outputs = self.infer(self.preprocess(image))
        answer = {"outputs": encode(outputs), "non_finite": non_finite_outputs(outputs),
                  "image": {"mode": image.mode, "size": list(image.size)}}
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


def non_finite_header(names: list[str]) -> dict[str, str]:
    """The X-Non-Finite-Outputs header naming `names`; none when all outputs are finite."""
    return {NON_FINITE_HEADER: ", ".join(names)} if names else {}


def answer_errors_as_json(app: Any) -> None:
    """A refused request as its 4xx, and any other exception as a 500 naming it, both as JSON: a
    client (and the harness's checks) always reads why, never a plain-text "Internal Server Error"."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        """(Starlette answers this, then re-raises: uvicorn logs the traceback and closes the
        connection, so a keep-alive client reconnects for its next request.)"""
        kind, message = type(error).__name__, str(error)[:2000]
        return JSONResponse({"error": f"{kind}: {message}", "type": kind, "message": message},
                            status_code=500)


def create_app(config: Mapping[str, Any]) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    service = Service(config)
    limits = service.limits
    bodies = request_bodies(service.spec.input_names)
    app = FastAPI(title="modelparity service", description=f"{service.spec.name} on {service.format_id}")
    answer_errors_as_json(app)

    async def body_of(request: Request, limit: int, what: str = "the limit") -> bytes:
        """The body, at most `limit` bytes. A longer one is read to its end and discarded before the
        413, so that the client reads the answer instead of a connection reset."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is {size} bytes; {what} is {limit}")
        return b"".join(chunks)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """On the event loop: it answers even while every threadpool worker decodes or infers."""
        return {"status": "ok", "model": service.spec.name, "format": service.format_id,
                "facts": jsonable(service.runner.facts)}

    def answer_infer(kind: str, body: bytes) -> Response:
        """Decoding, inference and encoding, in the threadpool."""
        if kind == NPZ:
            outputs = service.infer(service.inputs.decode_npz(body))
            buffer = io.BytesIO()
            np.savez(buffer, **outputs)
            return Response(buffer.getvalue(), media_type=NPZ,
                            headers=non_finite_header(non_finite_outputs(outputs)))
        outputs = service.infer(service.inputs.decode_json(body))
        bad = non_finite_outputs(outputs)
        return JSONResponse({"outputs": encode(outputs), "non_finite": bad}, headers=non_finite_header(bad))

    @app.post("/v1/infer", openapi_extra={"requestBody": bodies["infer"]},
              responses={400: {"description": "JSON that does not parse or nests too deep"},
                         413: {"description": "body or declared tensor too large"},
                         415: {"description": "neither JSON nor .npz"},
                         422: {"description": "inputs of the wrong name, shape or dtype, or not finite"}})
    async def infer(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind == "application/json":
            body = await body_of(request, service.inputs.max_json_bytes,
                                 f"the limit for JSON, from the model's largest inputs (send {NPZ} "
                                 f"up to {limits.max_body_bytes})")
        else:
            body = await body_of(request, limits.max_body_bytes)
        if kind not in (NPZ, "application/json"):
            raise BadRequest(415, f"content type {kind or '(none)'!r}; send application/json or {NPZ}")
        return await run_in_threadpool(answer_infer, kind, body)

    @app.post("/predict", openapi_extra={"requestBody": bodies["predict"]},
              responses={400: {"description": "not a readable image"},
                         404: {"description": "the model takes no images"},
                         413: {"description": "body or image too large"},
                         415: {"description": "not a multipart upload"},
                         422: {"description": "no file in the multipart field 'file'"}})
    async def predict(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if not kind.startswith("multipart/form-data"):
            raise BadRequest(415, f"content type {kind or '(none)'!r}; upload the image as multipart "
                                  "form field 'file'")
        body = await body_of(request, limits.max_body_bytes)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}
        form = await Request(request.scope, replay).form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest(422, "no file in the multipart field 'file'")
        answer = await run_in_threadpool(service.predict, await upload.read())
        return JSONResponse(answer, headers=non_finite_header(answer["non_finite"]))

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
