"""What the HTTP service (modelparity.serve) accepts, and how it decodes it: the request limits
(`Limits`, CONFIG's `limits`), JSON and .npz bodies to named arrays, and image uploads to PIL images,
each checked against the model's declared inputs and the limits.

Sizes are checked on what a request declares (image header, .npz member and .npy headers, JSON shape
and dtype) before anything is decoded, so a request costs at most its limits in memory. Every refusal
is a `BadRequest`: a 4xx status and a message naming the problem and what is accepted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import lzma
import math
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

MAX_BODY_BYTES = 32 * 1024 * 1024  # resnet18 at batch 32 as .npz is 19 MB
JSON_BYTES_PER_ELEMENT = 48  # float64 repr (24), a separator and pretty-printing's indentation
JSON_OVERHEAD_BYTES = 64 * 1024  # names, shapes, dtypes, whitespace
NPY_HEADER_BYTES = 10_000  # numpy's own max_header_size
ZIP_SIGNATURE_SLACK = 64  # central-directory signatures an .npz may hold beyond one per input
# Any failure to read an untrusted archive is the client's: corrupt zip structure, deflate or lzma
# stream, encryption (RuntimeError), an unsupported compression (NotImplementedError).
NPZ_ERRORS = (ValueError, OSError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error,
              lzma.LZMAError)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may make the service hold in memory. Tensor sizes are not here: the model's
    declared inputs (static dims, dynamic axes at their max) bound them."""

    max_body_bytes: int = MAX_BODY_BYTES  # any body, as sent
    max_json_bytes: int | None = None  # None: from the model's largest inputs, at most max_body_bytes
    max_json_depth: int = 32  # a request needs 4, plus one per dimension of nested `data`
    max_image_pixels: int = 4096 * 4096  # a 12 MP phone photo fits; RGBA decoded: 64 MiB
    allow_non_finite: bool = False  # NaN, Inf (and JSON numbers beyond float range such as 1e400)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Limits:
        """CONFIG's `limits`; a misspelt name fails at start-up, not silently at the first request."""
        known = {field.name for field in dataclasses.fields(cls)}
        if set(values) - known:
            raise ValueError(f"unknown limits {sorted(set(values) - known)}; known: {sorted(known)}")
        return cls(**values)

    def __post_init__(self) -> None:
        """CONFIG is JSON: a limit given as a string or a float would otherwise fail at a request."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "allow_non_finite":
                valid = type(value) is bool
            else:
                valid = type(value) is int and value > 0 or value is None and field.name == "max_json_bytes"
            if not valid:
                raise ValueError(f"limit {field.name}={value!r}: expected {field.type}")


class Declared(NamedTuple):
    """A tensor's shape and dtype as a request declares them: what check_inputs reads."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


class BadRequest(Exception):
    """A request the service refuses: answered `status` with `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.?)*+(?:"|\Z)', re.DOTALL)  # an unterminated one runs to the end
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")


def nested_deeper(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` nests arrays and objects deeper than `limit`, found without
    recursion (json.loads recurses, and fails at Python's recursion limit): strings removed, then
    innermost bracket pairs, one level a round. At most `limit` passes over the body."""
    brackets = _JSON_STRING.sub(b"", body).translate(_SQUARE, _NOT_BRACKETS)
    if b"[" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):
            return False  # balanced out, or unbalanced: json.loads says which
        brackets = inner_removed
    return b"[]" in brackets


def largest_elements(spec: Any) -> dict[str, int]:
    """Per input, the most elements the model takes: static dims, dynamic axes at their max."""
    largest = {}
    for name, example in spec.example_inputs.items():
        dynamic = spec.dynamic_axes.get(name, {})
        largest[name] = math.prod(spec.axis_ranges[dynamic[dim]].max if dim in dynamic else size
                                  for dim, size in enumerate(example.shape))
    return largest


def check_inputs(spec: Any, arrays: Mapping[str, np.ndarray | Declared]) -> None:
    """Names, dtypes and shapes against the spec (dynamic axes within their ranges)."""
    expected = spec.input_names
    if sorted(arrays) != sorted(expected):
        raise BadRequest(422, f"inputs {sorted(arrays)} given; the model takes {expected}")
    for name, value in arrays.items():
        example = spec.example_inputs[name]
        if value.dtype != example.dtype:
            raise BadRequest(422, f"input {name!r} has dtype {value.dtype}; the model takes "
                                  f"{example.dtype}")
        if value.ndim != example.ndim:
            raise BadRequest(422, f"input {name!r} has shape {list(value.shape)}; the model takes "
                                  f"{example.ndim} dimensions like {list(example.shape)}")
        dynamic = spec.dynamic_axes.get(name, {})
        for dim, size in enumerate(value.shape):
            axis = dynamic.get(dim)
            if axis is None and size != example.shape[dim]:
                raise BadRequest(422, f"input {name!r} dim {dim} is {size}; the model takes "
                                      f"{example.shape[dim]} there")
            if axis is not None and not spec.axis_ranges[axis].allows(size):
                bounds = spec.axis_ranges[axis]
                raise BadRequest(422, f"input {name!r} dim {dim} ({axis}) is {size}; the model "
                                      f"takes {bounds.min}..{bounds.max}")


def refuse_non_finite(arrays: Mapping[str, np.ndarray]) -> None:
    """NaN and Inf inputs are refused (unless Limits.allow_non_finite, which the service reads):
    a model's answer to them says nothing about the model."""
    for name, value in arrays.items():
        if value.dtype.kind not in "fc":
            continue
        bad = np.flatnonzero(~np.isfinite(value))
        if bad.size:
            index = tuple(int(i) for i in np.unravel_index(bad[0], value.shape))
            raise BadRequest(422, f"input {name!r} is not finite at {bad.size} of {value.size} "
                                  f"elements, the first {value[index]} at index {list(index)}; the "
                                  "service takes finite numbers only (JSON NaN and Infinity, and "
                                  "numbers beyond the dtype's range such as 1e400, are not finite)")


# numpy parses every .npy header with ast.literal_eval, and CPython 3.11 keeps the AST constructor's
# recursion depth in per-interpreter state: two threadpool threads parsing at once (a garbage
# collection inside one lets the other run) can fail a good request with "SystemError: AST
# constructor recursion depth mismatch" (cpython gh-106905; 1 of 1959 requests under 4 clients in CI
# at bcee484). .npz bodies are decoded one at a time; inference already runs one at a time.
NPZ_DECODING = threading.Lock()


class InputDecoder:
    """Request bodies to the model's named arrays, within `limits`. `check` is the service's
    names/dtypes/shapes check (check_inputs unless a service replaces it), run on what a body
    declares before its data is read."""

    def __init__(self, spec: Any, limits: Limits,
                 check: Callable[[Mapping[str, np.ndarray | Declared]], None]) -> None:
        self.spec = spec
        self.limits = limits
        self.check = check
        self.largest = largest_elements(spec)
        self.max_json_bytes = limits.max_json_bytes or min(
            limits.max_body_bytes, JSON_OVERHEAD_BYTES + JSON_BYTES_PER_ELEMENT * sum(self.largest.values()))

    def admit(self, name: Any, shape: Any, dtype: Any) -> Declared:
        """A tensor's declared name, shape and dtype, before its data is read: a name the model
        takes and its dtype, given as the model's own dtype name or as an np.dtype from an .npy
        header (never np.dtype(a client's string), which makes a dtype of any size)."""
        if name not in self.largest:
            raise BadRequest(422, f"input {str(name)[:100]!r}: the model takes inputs "
                                  f"{self.spec.input_names}")
        expected = self.spec.example_inputs[name].dtype
        # (np.dtype("float64") == None is True: only a str or an np.dtype is compared)
        if not (dtype == expected.name if isinstance(dtype, str)
                else isinstance(dtype, np.dtype) and dtype == expected):
            raise BadRequest(422, f"input {name!r} has dtype {str(dtype)[:40]!r}; the model takes "
                                  f"{expected.name}")
        if (not isinstance(shape, (list, tuple)) or len(shape) > 64
                or not all(type(size) is int and size >= 0 for size in shape)):
            raise BadRequest(422, f"input {name!r}: the shape must be a list of non-negative integers, "
                                  f"like {list(self.spec.example_inputs[name].shape)}")
        return Declared(tuple(shape), expected)

    def check_declared(self, declared: Mapping[str, Declared]) -> None:
        """`check` on what a request declares, then the size bound, before any data is read. The
        bound stays even in a service without a check: it bounds memory, not correctness."""
        self.check(declared)
        for name, tensor in declared.items():
            if math.prod(tensor.shape) > self.largest[name]:
                raise BadRequest(413, f"input {name!r} declares shape {list(tensor.shape)[:8]}: "
                                      f"{math.prod(tensor.shape)} elements; the model takes at most "
                                      f"{self.largest[name]}")

    def decode_json(self, body: bytes) -> dict[str, np.ndarray]:
        """{"inputs": {name: {"shape", "dtype", "data"}}} (UTF-8, as RFC 8259 asks) -> arrays."""
        if nested_deeper(body, self.limits.max_json_depth):
            raise BadRequest(400, f"the JSON nests deeper than {self.limits.max_json_depth} levels; a "
                                  'request is {"inputs": {name: {"shape", "dtype", "data": [...]}}}')
        try:
            payload = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, 4300 digits
            raise BadRequest(400, f"the body is not valid UTF-8 JSON: {error}") from None
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, dict) or not all(isinstance(v, dict) for v in inputs.values()):
            raise BadRequest(422, 'the body must be {"inputs": {name: {"shape": [...], "dtype": "...", '
                                  '"data": [...]}}}')
        declared = {name: self.admit(name, item.get("shape"), item.get("dtype"))
                    for name, item in inputs.items()}
        self.check_declared(declared)
        arrays = {}
        for name, (shape, dtype) in declared.items():
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # 1e39 as float32 is inf: refused later
                    arrays[name] = np.asarray(inputs[name]["data"], dtype=dtype).reshape(shape)
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                raise BadRequest(422, f"input {name!r} data: {type(error).__name__}: {error}") from None
        return arrays

    def decode_npz(self, body: bytes) -> dict[str, np.ndarray]:
        """An .npz body -> arrays. The zip's member count (before zipfile reads its central
        directory), each member's name, .npy header and size in the zip are checked,
        and `check` and the size bound run on the headers, before any data is decompressed."""
        names = [f"{name}.npy" for name in self.spec.input_names]
        # zipfile reads every central directory entry (500 bytes each in memory) before any check;
        # each starts with this signature, so its count bounds theirs (the slack: data holding it)
        if body.count(b"PK\x01\x02") > len(names) + ZIP_SIGNATURE_SLACK:
            raise BadRequest(422, f"the .npz holds more than {len(names) + ZIP_SIGNATURE_SLACK} "
                                  f"members; the model takes {names}")
        try:
            with NPZ_DECODING, zipfile.ZipFile(io.BytesIO(body)) as archive:
                declared = {}
                for info in archive.infolist():
                    name = info.filename.removesuffix(".npy")
                    if info.filename not in names or name in declared:
                        raise BadRequest(422, f".npz member {info.filename[:100]!r}: the model takes "
                                              f"{names}, once each")
                    declared[name] = self._npy_header(archive, info, name)
                self.check_declared(declared)
                arrays = {}
                for name in declared:
                    with archive.open(f"{name}.npy") as member:
                        arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
        except NPZ_ERRORS as error:
            raise BadRequest(422, f"the body is not a readable .npz: {type(error).__name__}: {error}"
                             ) from None
        return arrays

    def _npy_header(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Declared:
        """One member's .npy header (shape and dtype, through admit), and its size in the zip (to
        which zipfile holds decompression): the header and the data it declares, no more. Reading
        the header decompresses a few KiB, whatever the member inflates to."""
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise BadRequest(422, f".npz member {info.filename!r}: .npy version {version}; "
                                      "numpy.savez writes 1.0 or 2.0")
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(member, max_header_size=NPY_HEADER_BYTES)
            header_bytes = member.tell()
        declared = self.admit(name, shape, dtype)
        data_bytes = math.prod(declared.shape) * declared.dtype.itemsize
        if info.file_size > header_bytes + data_bytes:
            raise BadRequest(413, f".npz member {info.filename!r} is {info.file_size} bytes "
                                  f"decompressed; its header declares {list(declared.shape)} "
                                  f"{declared.dtype}: {header_bytes + data_bytes} bytes")
        return declared


def open_image(image_bytes: bytes, max_pixels: int) -> Any:
    """An upload as a decoded PIL image, its size checked from the header before any pixel is."""
    from PIL import Image, UnidentifiedImageError

    if not image_bytes:
        raise BadRequest(400, "the upload is empty")
    try:
        image = Image.open(io.BytesIO(image_bytes))  # the header only; nothing is decoded yet
        if image.width * image.height > max_pixels:
            raise BadRequest(413, f"the image is {image.width}x{image.height} = "
                                  f"{image.width * image.height} pixels; the limit is {max_pixels}")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # PIL's own guard, in Image.open: a header past 2 x Image.MAX_IMAGE_PIXELS (89 M)
        raise BadRequest(413, f"the image is too large to decode: {error}; the limit is {max_pixels} "
                              "pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadRequest(400, f"the upload is not a readable image: {type(error).__name__}: {error}"
                         ) from None
    if image.width == 0 or image.height == 0:
        raise BadRequest(400, f"the image is {image.width}x{image.height}")
    return image
