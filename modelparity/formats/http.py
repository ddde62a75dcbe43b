"""The HTTP service as a format: modelparity.serve (FastAPI) over another runner, started with uvicorn
on 127.0.0.1 on a free port in a child process, and called with httpx.

`onnx-dynamo-ort-http` is the service over ONNX Runtime (the seed's deployment), `torchscript-http` and
`onnx-dynamo-ov-irfp32-cpu-http` the same service over TorchScript and OpenVINO. Parity sends the check's
inputs to `POST /v1/infer` as .npz (exact), so any difference from the direct runner is the service's;
suites/parity also sends real images to `/predict` and bad requests to both endpoints
(test_http_service.py).
"""

from __future__ import annotations

import functools
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelparity.formats.base import Format, LoadContext, Requirement

SERVE = (Requirement("fastapi", "pip install 'modelparity[serve]'"),
         Requirement("uvicorn", "pip install 'modelparity[serve]'"),
         Requirement("httpx", "pip install 'modelparity[serve]'"),
         Requirement("multipart", "pip install 'modelparity[serve]'"),
         Requirement("PIL", "pip install 'modelparity[serve]'"))
INNER_FORMATS = ("onnx-dynamo-ort", "torchscript", "onnx-dynamo-ov-irfp32-cpu")
START_TIMEOUT = 180.0
REQUEST_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """uvicorn serving modelparity.serve for one runner, until stop() (or garbage collection)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        import httpx

        self._scratch = tempfile.TemporaryDirectory(prefix="modelparity-serve-")
        path = Path(self._scratch.name) / "config.json"
        path.write_text(json.dumps(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(Path(self._scratch.name) / "service.log", "w+")  # noqa: SIM115 (kept open)
        self._process = subprocess.Popen([sys.executable, "-m", "modelparity.serve", str(path),
                                          "--port", str(self.port)],
                                         stdout=self._log, stderr=subprocess.STDOUT)
        self._finalizer = weakref.finalize(self, self._stop, self._process, self._log, self._scratch)
        self.client = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT)
        self.health = self._wait()

    def _wait(self) -> dict[str, Any]:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the service exited with {self._process.returncode} before answering "
                                   f"/health:\n{self.log()[-3000:]}")
            try:
                answer = self.client.get("/health")
                if answer.status_code == 200:
                    return answer.json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the service did not answer /health within {START_TIMEOUT:g} s:\n"
                           f"{self.log()[-3000:]}")

    @property
    def pid(self) -> int:
        """The service's process id (uvicorn's, in which the app runs)."""
        return self._process.pid

    def stop(self) -> None:
        """Ends the service (SIGTERM; SIGKILL after 10 s) and removes its scratch directory; once."""
        self.client.close()
        self._finalizer()

    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text()

    @staticmethod
    def _stop(process: subprocess.Popen, log: Any, scratch: tempfile.TemporaryDirectory) -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        scratch.cleanup()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class HttpRunner:
    """The check's inputs to POST /v1/infer as .npz; a non-200 answer raises with the service's error."""

    runtime_modules = ("httpx",)

    def __init__(self, context: LoadContext) -> None:
        if context.model is None:
            raise RuntimeError("the HTTP format needs the model's root artifact (LoadContext.model)")
        params = context.params
        self.service = ServiceProcess({
            "recipe": {"options": params["options"], "plugins": []}, "format_id": params["inner"],
            "artifact": str(context.artifact),
            "model_artifact": str(context.model),
            "preprocess": params.get("preprocess"), "app": params.get("app")})
        self._outputs = context.output_names
        inner = self.service.health["facts"]
        self.facts = {**inner, "runtime": f"HTTP service (FastAPI, uvicorn) over {inner.get('runtime')}",
                      "service": self.service.url, "inner_format": params["inner"]}

    def timed_call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One request: encoding done once, the round trip (and the service's decode) timed."""
        return functools.partial(self.service.client.post, "/v1/infer", content=npz_bytes(inputs),
                                 headers={"content-type": "application/x-npz"})

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        answer = self.timed_call(inputs)()
        if answer.status_code != 200:
            raise RuntimeError(f"POST /v1/infer answered {answer.status_code}: {answer.text[:2000]}")
        with np.load(io.BytesIO(answer.content)) as data:
            return {name: data[name] for name in self._outputs}


def http_format(graph: Mapping[str, Format], inner: str, options: Mapping[str, Any], name: str = "http",
                **params: Any) -> Format:
    """The service over the runner format `inner`; `params` may name the service's own `preprocess`
    or application factory (`app`), each as "module:function"."""
    return Format(name, parent=inner, load=HttpRunner, requires=graph[inner].requires + SERVE,
                  custom_ops=True, serves_http=True, precision=graph[inner].precision,
                  params={"inner": inner, "options": dict(options), **params},
                  description=f"modelparity.serve (FastAPI + uvicorn) over {inner}, POST /v1/infer")


def formats(graph: Mapping[str, Format], options: Mapping[str, Any]) -> list[Format]:
    return [http_format(graph, inner, options) for inner in INNER_FORMATS if inner in graph]
