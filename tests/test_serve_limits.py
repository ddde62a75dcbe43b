"""The HTTP service's limits (modelparity/serve_inputs.py, served by modelparity/serve.py) against
the real server: `python -m modelparity.serve` on 127.0.0.1 over the tiny model's eager runner, started
the way the HTTP formats start it (modelparity.formats.http.ServiceProcess). Every request it cannot
serve answers a 4xx with a JSON reason, and costs the server at most PEAK_MIB of resident memory (its
VmHWM, reset before each request through /proc/PID/clear_refs); heavy requests do not hold up
/health; good ones still answer what torch answers; a model that answers NaN, or raises, is answered
in JSON, never with a bare 500."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelparity.formats.http import ServiceProcess, npz_bytes
from modelparity.images import png_declaring, upload_images
from modelparity.models import save_model_artifact
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="measures the server's memory through Linux's /proc")

REFERENCE = f"{TINY}:build_with_preprocess"
NON_FINITE = ROOT / "tests" / "models" / "non_finite_model.py"
PEAK_MIB = 32  # one request's resident-memory growth; a good one measured 0-8 MiB
SOAK_MIB = 64  # 200 mixed requests from 4 clients, at the peak and after (measured: 17-35 MiB)
HEALTH_SECONDS = 0.5  # /health's slowest answer while heavy requests are decoded
BOMB_MIB = 128  # what an .npz bomb inflates to: four times PEAK_MIB
NPZ = {"content-type": "application/x-npz"}
JSON = {"content-type": "application/json"}


class ServerMemory:
    """The server process's resident memory, from /proc/PID/status, in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
        raise KeyError(key)

    def rss(self) -> int:
        return self._status("VmRSS")

    def reset_peak(self) -> int:
        """Resets VmHWM to the current RSS (clear_refs 5); returns that RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self.rss()

    def peak(self) -> int:
        return self._status("VmHWM")


@pytest.fixture(scope="module")
def spec() -> Any:
    from tests.models import tiny_model

    return tiny_model.build_with_preprocess()


@pytest.fixture(scope="module")
def config(spec: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    artifact = tmp_path_factory.mktemp("tiny-artifact")
    save_model_artifact(spec, REFERENCE, artifact)
    return {"recipe": {"options": {"opsets": [17]}, "plugins": []}, "format_id": "eager",
            "artifact": str(artifact), "model_artifact": str(artifact)}


@pytest.fixture(scope="module")
def server(config: dict[str, Any]) -> Iterator[ServiceProcess]:
    service = ServiceProcess(config)
    for _ in range(3):  # first calls allocate the runtime's buffers: not a request's cost
        service.client.post("/v1/infer", content=npz_bytes(good_inputs()), headers=NPZ)
        service.client.post("/v1/infer", content=good_json(), headers=JSON)
        service.client.post("/predict", files={"file": ("f.png", upload_images()["flower-rgb.png"])})
    yield service
    service.stop()


@pytest.fixture(scope="module")
def memory(server: ServiceProcess) -> ServerMemory:
    return ServerMemory(server.pid)


def good_inputs(batch: int = 1) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def good_json(batch: int = 1, replace: tuple[str, str] | None = None, **fields: Any) -> bytes:
    """The JSON request for good_inputs(batch); `replace` swaps the text of the first number."""
    image = good_inputs(batch)["image"]
    tensor = {"shape": list(image.shape), "dtype": "float32", "data": image.ravel().tolist(), **fields}
    text = json.dumps({"inputs": {"image": tensor}})
    if replace:
        text = text.replace(replace[0], replace[1], 1)
    return text.encode()


def npz_bomb(name: str = "image.npy", shape: tuple[int, ...] = (BOMB_MIB * 2**18,),
             before: dict[str, np.ndarray] | None = None) -> bytes:
    """A deflated .npz of about BOMB_MIB KiB: the members `before`, then member `name` whose .npy
    header declares float32 `shape` and which inflates to BOMB_MIB MiB of zeros after the header."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for member_name, value in (before or {}).items():
            with archive.open(f"{member_name}.npy", "w") as member:
                np.lib.format.write_array(member, value)
        with archive.open(name, "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": shape})
            block = bytes(2**20)
            for _ in range(BOMB_MIB):
                member.write(block)
    return buffer.getvalue()


def npz_of_many_members(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            archive.writestr(f"{index:x}", b"")
    return buffer.getvalue()


def upload(content: bytes, name: str = "upload.png") -> dict[str, Any]:
    return {"files": {"file": (name, content, "image/png")}}


def first_number(batch: int = 1) -> str:
    return json.dumps(good_inputs(batch)["image"].ravel()[0].item())


# name -> (path, request keyword arguments, status, words the reason must contain)
BAD_REQUESTS: dict[str, tuple[str, Callable[[], dict[str, Any]], int, list[str]]] = {
    "PNG declaring 50000x50000": (
        "/predict", lambda: upload(png_declaring(50000, 50000)), 413,
        ["too large to decode", "2500000000 pixels", "the limit is 16777216 pixels"]),
    "PNG declaring 5000x5000, over max_image_pixels": (
        "/predict", lambda: upload(png_declaring(5000, 5000)), 413,
        ["5000x5000 = 25000000 pixels", "the limit is 16777216"]),
    "JSON NaN": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "NaN")), "headers": JSON},
        422, ["input 'image' is not finite at 1 of 768", "first nan at index [0, 0, 0, 0]",
              "finite numbers only"]),
    "JSON Infinity": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "-Infinity")),
                              "headers": JSON},
        422, ["first -inf at index [0, 0, 0, 0]", "finite numbers only"]),
    "JSON 1e400": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "1e400")), "headers": JSON},
        422, ["first inf at index [0, 0, 0, 0]", "such as 1e400"]),
    "JSON 1e39, past float32": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "1e39")), "headers": JSON},
        422, ["first inf at index [0, 0, 0, 0]"]),
    "JSON integer of 401 digits": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "1" + "0" * 400)),
                              "headers": JSON},
        422, ["input 'image' data: OverflowError"]),
    "JSON integer of 5000 digits": (
        "/v1/infer", lambda: {"content": good_json(replace=(first_number(), "1" * 5000)),
                              "headers": JSON},
        400, ["not valid UTF-8 JSON", "4300"]),
    "JSON nested 50000 deep": (
        "/v1/infer", lambda: {"content": b'{"inputs": ' + b"[" * 50000 + b"]" * 50000 + b"}",
                              "headers": JSON},
        400, ["nests deeper than 32 levels", '{"inputs": {name: {"shape", "dtype", "data": [...]}}}']),
    "JSON dtype S200000000": (
        "/v1/infer", lambda: {"content": json.dumps({"inputs": {"image": {
            "shape": [1], "dtype": "S200000000", "data": ["x"]}}}).encode(), "headers": JSON},
        422, ["input 'image' has dtype 'S200000000'", "the model takes float32"]),
    "JSON body over the JSON limit": (
        "/v1/infer", lambda: {"content": json.dumps({"inputs": {"image": {
            "shape": [8, 3, 16, 16], "dtype": "float32", "data": [0.0] * 200_000}}}).encode(),
            "headers": JSON},
        413, ["the limit for JSON", "application/x-npz up to 33554432"]),
    ".npz member declaring 128 MiB": (  # the old service inflated it, then refused its shape
        "/v1/infer", lambda: {"content": npz_bomb(), "headers": NPZ}, 422,
        ["input 'image' has shape [33554432]", "the model takes 4 dimensions like [2, 3, 16, 16]"]),
    ".npz member of the right header, padded to 128 MiB": (
        "/v1/infer", lambda: {"content": npz_bomb(shape=(1, 3, 16, 16)), "headers": NPZ}, 413,
        ["member 'image.npy' is 134217856 bytes decompressed", "declares [1, 3, 16, 16] float32: 3200"]),
    ".npz with an extra member inflating to 128 MiB": (
        "/v1/infer", lambda: {"content": npz_bomb("extra.npy", before=good_inputs()), "headers": NPZ},
        422, ["member 'extra.npy': the model takes ['image.npy'], once each"]),
    ".npz whose one member has an unknown name and inflates to 128 MiB": (
        "/v1/infer", lambda: {"content": npz_bomb("weights.npy"), "headers": NPZ},
        422, ["member 'weights.npy': the model takes ['image.npy'], once each"]),
    ".npz of 100 000 empty members": (  # zipfile holds each member's entry (500 bytes) in memory
        "/v1/infer", lambda: {"content": npz_of_many_members(100_000), "headers": NPZ},
        422, ["the .npz holds more than 65 members; the model takes ['image.npy']"]),
    ".npz member of another dtype": (
        "/v1/infer", lambda: {"content": npz_bytes({"image": good_inputs()["image"].astype(np.float64)}),
                              "headers": NPZ},
        422, ["input 'image' has dtype 'float64'", "the model takes float32"]),
    ".npz member of a shape over the batch range": (
        "/v1/infer", lambda: {"content": npz_bytes(good_inputs(9)), "headers": NPZ},
        422, ["dim 0 (batch) is 9", "1..8"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_with_its_reason_in_bounded_memory(server, memory, case):
    path, make, status, words = BAD_REQUESTS[case]
    kwargs = make()
    before = memory.reset_peak()
    answer = server.client.post(path, **kwargs)
    growth = memory.peak() - before
    assert answer.status_code == status, answer.text[:300]
    reason = answer.json()["error"]
    assert all(word in reason for word in words), reason
    assert growth <= PEAK_MIB, f"{case}: the server's resident memory grew {growth} MiB"


def test_good_requests_answer_what_torch_answers(server, spec):
    import torch
    from PIL import Image

    for batch in (1, 8):  # 8: the declared maximum, at the element bound
        inputs = good_inputs(batch)
        with torch.no_grad():
            expected = spec.module(torch.from_numpy(inputs["image"])).numpy()
        answer = server.client.post("/v1/infer", content=npz_bytes(inputs), headers=NPZ)
        assert answer.status_code == 200, answer.text[:300]
        with np.load(io.BytesIO(answer.content)) as data:
            np.testing.assert_allclose(data["logits"], expected, rtol=1e-5, atol=1e-5)
        answer = server.client.post("/v1/infer", content=good_json(batch), headers=JSON)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["non_finite"] == [] and "x-non-finite-outputs" not in answer.headers
        logits = answer.json()["outputs"]["logits"]
        np.testing.assert_allclose(np.asarray(logits["data"]).reshape(logits["shape"]), expected,
                                   rtol=1e-5, atol=1e-5)
    nested = {"inputs": {"image": {"shape": [1, 3, 16, 16], "dtype": "float32",
                                   "data": good_inputs()["image"].tolist()}}}  # depth 7 of 32
    assert server.client.post("/v1/infer", json=nested).status_code == 200
    photo = upload_images()["flower-rgb.png"]
    answer = server.client.post("/predict", **upload(photo))
    assert answer.status_code == 200, answer.text[:300]
    with torch.no_grad():
        expected = spec.module(torch.from_numpy(spec.preprocess(Image.open(io.BytesIO(photo)))["image"]))
    np.testing.assert_allclose(answer.json()["outputs"]["logits"]["data"], expected.numpy().ravel(),
                               rtol=1e-5, atol=1e-5)


class HealthProbe:
    """GET /health every 20 ms on its own connection until stopped: every status, the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url, self.statuses, self.slowest = url, [], 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    self.statuses.append(client.get("/health").status_code)
                except httpx.TransportError:
                    self.statuses.append(0)  # no answer
                self.slowest = max(self.slowest, time.perf_counter() - start)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def in_parallel(url: str, clients: int, requests: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """The requests, spread over `clients` threads with a connection each; their statuses in order
    (0: no answer, e.g. a connection the server closed after a 500)."""
    import httpx

    statuses: list[int] = [0] * len(requests)

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for index in range(offset, len(requests), clients):
                path, kwargs = requests[index]
                try:
                    statuses[index] = http.post(path, **kwargs).status_code
                except httpx.TransportError:
                    statuses[index] = 0
    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_health_answers_while_heavy_images_are_decoded(server):
    """4000 x 4000 PNGs (48 MB decoded each, about 0.4 s to decode) from four clients at once: the
    decoding runs in the threadpool, so /health, on the event loop, answers within HEALTH_SECONDS
    (the old service decoded on the event loop: /health waited 1.9-2.0 s)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000), (10, 200, 30)).save(buffer, "PNG")
    heavy = ("/predict", upload(buffer.getvalue()))
    with HealthProbe(server.url) as health:
        statuses = in_parallel(server.url, 4, [heavy] * 12)
    print(f"/health slowest {health.slowest:.3f} s over {len(health.statuses)} calls")
    assert statuses == [200] * 12
    assert health.slowest < HEALTH_SECONDS, f"/health took {health.slowest:.2f} s"
    assert set(health.statuses) == {200} and len(health.statuses) >= 5


def test_soak_of_good_and_bad_requests_keeps_health_and_memory_bounded(server, memory):
    """200 requests, good and bad interleaved, from 4 clients: each answers its status, /health
    answers throughout, and the server's resident memory stays within SOAK_MIB of its start (what
    remains after is mostly what the threads' malloc arenas keep)."""
    good = [("/v1/infer", {"content": npz_bytes(good_inputs(4)), "headers": NPZ}, 200),
            ("/v1/infer", {"content": good_json(2), "headers": JSON}, 200),
            ("/predict", upload(upload_images()["china-gray.png"]), 200)]
    bad = [(path, make(), status) for path, make, status, _ in BAD_REQUESTS.values()]
    mixed = [(good + bad)[i % len(good + bad)] for i in range(200)]
    before = memory.reset_peak()
    with HealthProbe(server.url) as health:
        statuses = in_parallel(server.url, 4, [(path, kwargs) for path, kwargs, _ in mixed])
    peak, after = memory.peak() - before, memory.rss() - before
    summary = (f"resident memory peak +{peak} MiB, after +{after} MiB; /health slowest "
               f"{health.slowest:.2f} s, statuses {sorted(set(health.statuses))}")
    print(summary)  # shown with -s or -rP
    wrong = [(path, got, status) for (path, _, status), got in zip(mixed, statuses, strict=True)
             if got != status]
    assert not wrong, f"{len(wrong)} answers not as expected, first {wrong[:3]}; {summary}"
    assert set(health.statuses) == {200}, summary
    assert health.slowest < 2 * HEALTH_SECONDS, summary
    assert peak <= SOAK_MIB and after <= SOAK_MIB, summary


def test_limits_are_configurable_and_checked(config):
    """CONFIG's `limits`: a lower pixel limit and JSON depth refuse what the defaults accept;
    allow_non_finite lets NaN through to the model; a misspelt or mistyped limit is refused."""
    from modelparity.serve_inputs import Limits

    limits = {"max_image_pixels": 1000, "max_json_depth": 3, "allow_non_finite": True}
    service = ServiceProcess({**config, "limits": limits})
    try:
        answer = service.client.post("/predict", **upload(png_declaring(40, 30)))
        assert answer.status_code == 413
        assert "40x30 = 1200 pixels; the limit is 1000" in answer.json()["error"]
        answer = service.client.post("/v1/infer", content=good_json(), headers=JSON)
        assert answer.status_code == 400 and "deeper than 3 levels" in answer.json()["error"]
        nan = {"image": np.full((1, 3, 16, 16), np.nan, np.float32)}
        answer = service.client.post("/v1/infer", content=npz_bytes(nan), headers=NPZ)
        assert answer.status_code == 200
    finally:
        service.stop()
    with pytest.raises(ValueError, match="unknown limits \\['max_pixels'\\]; known: .*max_image_pixels"):
        Limits.of({"max_pixels": 10})
    with pytest.raises(ValueError, match="limit max_image_pixels='10'"):
        Limits.of({"max_image_pixels": "10"})


@pytest.fixture(scope="module")
def non_finite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service over tests/models/non_finite_model.py: NaN and ±Inf out for finite input."""
    from tests.models import non_finite_model

    artifact = tmp_path_factory.mktemp("non-finite-artifact")
    save_model_artifact(non_finite_model.build(), f"{NON_FINITE}:build", artifact)
    service = ServiceProcess({"recipe": {"options": {"opsets": [17]}, "plugins": []}, "format_id": "eager",
                              "artifact": str(artifact), "model_artifact": str(artifact)})
    yield service
    service.stop()


def strict_json(text: str) -> Any:
    """`text` parsed as RFC 8259 JSON: the bare NaN and Infinity that json.loads accepts are refused."""
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_an_output_of_nan_or_inf_is_answered_200_with_those_outputs_named(non_finite_server):
    """JSON writes NaN and ±Inf as "NaN", "Infinity", "-Infinity" (report.files.jsonable's rule);
    `non_finite` and the X-Non-Finite-Outputs header name the outputs holding them, in .npz too."""
    ones = {"image": np.ones((2, 3, 4, 4), np.float32)}
    body = json.dumps({"inputs": {"image": {"shape": [2, 3, 4, 4], "dtype": "float32",
                                            "data": ones["image"].ravel().tolist()}}})
    answer = non_finite_server.client.post("/v1/infer", content=body, headers=JSON)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-non-finite-outputs"] == "logits"
    assert strict_json(answer.text) == {
        "outputs": {"logits": {"shape": [2, 4], "dtype": "float32",
                               "data": [1.0, "NaN", "Infinity", "-Infinity"] * 2},
                    "mean": {"shape": [2, 1], "dtype": "float32", "data": [1.0, 1.0]}},
        "non_finite": ["logits"]}
    answer = non_finite_server.client.post("/v1/infer", content=npz_bytes(ones), headers=NPZ)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["x-non-finite-outputs"] == "logits"
    with np.load(io.BytesIO(answer.content)) as data:
        np.testing.assert_array_equal(data["logits"], [[1.0, np.nan, np.inf, -np.inf]] * 2)


def test_an_exception_in_the_runtime_is_a_json_500_naming_it(non_finite_server):
    """The model raises for an input above RAISE_ABOVE: a 500 whose JSON names the exception's type
    and message, on either encoding, and the service answers the next request. (Each on its own
    connection: uvicorn closes one after an exception reached it, once the 500 is sent.)"""
    import httpx

    raising = {"image": np.full((1, 3, 4, 4), 2000.0, np.float32)}
    body = json.dumps({"inputs": {"image": {"shape": [1, 3, 4, 4], "dtype": "float32",
                                            "data": raising["image"].ravel().tolist()}}})
    for kwargs in ({"content": body, "headers": JSON}, {"content": npz_bytes(raising), "headers": NPZ}):
        answer = httpx.post(f"{non_finite_server.url}/v1/infer", timeout=60, **kwargs)
        assert answer.status_code == 500, answer.text[:300]
        assert answer.headers["content-type"] == "application/json"
        reason = strict_json(answer.text)
        assert reason["type"] == "RuntimeError", reason
        assert "input above 1000: the runtime gives up" in reason["message"], reason
        assert reason["error"] == f"RuntimeError: {reason['message']}"
    assert non_finite_server.client.get("/health").status_code == 200


def test_npz_bodies_are_decoded_one_at_a_time(spec, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run in two threads
    at once (a request failed with "SystemError: AST constructor recursion depth mismatch" under
    load): the threadpool's decodes of .npz bodies never overlap there. ast.literal_eval is wrapped
    to sleep inside (releasing the GIL, as a garbage collection's finalizer can) and count callers."""
    import ast

    from modelparity.serve_inputs import InputDecoder, Limits, check_inputs

    decoder = InputDecoder(spec, Limits.of({}), check=lambda arrays: check_inputs(spec, arrays))
    body = npz_bytes(good_inputs())
    literal_eval, inside, most = ast.literal_eval, [0], [0]
    count = threading.Lock()

    def overlapping(source: Any) -> Any:
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)
        try:
            return literal_eval(source)
        finally:
            with count:
                inside[0] -= 1

    monkeypatch.setattr(ast, "literal_eval", overlapping)
    decoded: list[np.ndarray] = []

    def client() -> None:
        for _ in range(10):
            decoded.append(decoder.decode_npz(body)["image"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decoded) == 40 and all(np.array_equal(a, good_inputs()["image"]) for a in decoded)
    assert most[0] == 1, f"{most[0]} threads parsed .npy headers at once"
