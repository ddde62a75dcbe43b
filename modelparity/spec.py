"""The model spec: the one interface the built-in zoo and a user's own model share.

A spec is everything the harness needs to know about a model without guessing: the module, named
example inputs, output names, the dynamic axes it declares and their ranges. `validate` turns every
inconsistency into a `SpecError` naming the model and the fix, before any converter runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

InputGenerator = Callable[[Mapping[str, int], np.random.Generator], dict[str, np.ndarray]]


class SpecError(ValueError):
    """A model spec is unusable; the message names the model and what to change."""


@dataclass(frozen=True)
class AxisRange:
    """Sizes a dynamic axis may take, inclusive; with `multiple_of`, only multiples of it (e.g. 32
    for an image size a network downsamples five times). Two dims named by the same axis always
    have the same size (e.g. "size" for both height and width of a model that needs squares)."""

    min: int
    max: int
    multiple_of: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.min <= self.max:
            raise SpecError(f"axis range needs 0 < min <= max, got min={self.min} max={self.max}")
        if self.multiple_of < 1 or not self.sizes():
            raise SpecError(f"axis range {self.min}..{self.max} has no multiple of {self.multiple_of}")

    def sizes(self) -> range:
        """Every allowed size, smallest first."""
        first = -(-self.min // self.multiple_of) * self.multiple_of
        return range(first, self.max + 1, self.multiple_of)

    def allows(self, size: int) -> bool:
        return self.min <= size <= self.max and size % self.multiple_of == 0


@dataclass
class ModelSpec:
    """A model under test.

    `dynamic_axes` uses torch.onnx.export's convention: tensor name -> {dim index: axis name}, for
    inputs and (optionally) outputs. `axis_ranges` gives each axis name its allowed sizes. The axis
    named by `batch_axis` is the one parity varies (batch 1 and a batch > 1).
    `make_inputs(sizes, rng)` draws inputs for given axis sizes; without it, inputs are drawn like the
    example inputs (same dtype, mean and spread for floats, same value range for integers).
    `samples()` returns a small set of real inputs instead (samples along the batch axis, e.g. a few
    photos resized, sentences as token ids): a check takes seeded rows of them (with repetition when it
    needs more rows than there are); at sizes of other axes the samples do not have, inputs are
    drawn like the samples. `make_inputs` comes first when a spec gives both.
    `classifier_outputs` names outputs that hold class scores (top-k agreement): a tuple of names,
    whose last axis is the class axis, or {name: class axis} (segmentation: {"masks": 1}).
    `tolerances` overrides tolerance profiles for this model: {format glob or profile name: {...}}.
    `calibration()` returns the inputs INT8 quantisers calibrate on (samples along the batch axis): data
    like the deployment's, and not the evaluation set; without it, 16 samples drawn like the check
    inputs from their own seed.
    `preprocess(image)` turns one PIL image into the model's inputs (batch of one): the HTTP service's
    /predict applies it, and the harness applies the same function on the reference side.
    `custom_ops` declares the torch.library operators the module calls that no exporter knows, with
    their mappings to ONNX and ONNX Runtime (modelparity.custom_ops.CustomOp).
    `evaluation()` returns a labelled evaluation set for suites/precision: (inputs with samples along
    the batch axis, integer labels for the first classifier output); without it, precision drift is
    measured as agreement with FP32 on seeded inputs.
    `factory_reusable` says the factory's result depends on its code and the installed packages
    alone (no file it reads, no clock, no unseeded randomness): the harness then keeps the spec in
    its store and skips the factory in later sessions while that code is unchanged
    (modelparity.factory_cache). Its callables must be module-level functions (pickle names them).
    """

    name: str
    module: Any
    example_inputs: dict[str, np.ndarray]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    axis_ranges: dict[str, AxisRange] = field(default_factory=dict)
    batch_axis: str | None = "batch"
    classifier_outputs: tuple[str, ...] | dict[str, int] = ()
    make_inputs: InputGenerator | None = None
    samples: Callable[[], dict[str, np.ndarray]] | None = None
    tolerances: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: Callable[[], dict[str, np.ndarray]] | None = None
    preprocess: Callable[[Any], dict[str, np.ndarray]] | None = None
    evaluation: Callable[[], tuple[dict[str, np.ndarray], np.ndarray]] | None = None
    custom_ops: tuple[Any, ...] = ()
    builtin: bool = False
    factory_reusable: bool = False
    description: str = ""
    _pool: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def input_names(self) -> list[str]:
        return list(self.example_inputs)

    def example_sizes(self) -> dict[str, int]:
        """The size each dynamic axis has in the example inputs."""
        return self._sizes_of(self.example_inputs)

    def export_sizes(self) -> dict[str, int]:
        """Axis sizes for exporting: the example's, but never 1 on a dynamic axis.

        Tracing exporters specialise an axis of size 1 (torch.export's 0/1 specialisation), which
        would silently freeze it; 2 (or the axis minimum, if larger) keeps it symbolic.
        """
        sizes = self.example_sizes()
        for axis, size in sizes.items():
            bounds = self.axis_ranges[axis]
            if size == 1 and bounds.max >= 2:
                sizes[axis] = next(n for n in bounds.sizes() if n >= 2)
        return sizes

    def batch_dim(self, tensor: str) -> int | None:
        """The dim of `tensor` that is the batch axis (None: no batch axis, or not on this tensor)."""
        return next((d for d, axis in self.dynamic_axes.get(tensor, {}).items()
                     if axis == self.batch_axis), None) if self.batch_axis else None

    def rows(self, inputs: Mapping[str, np.ndarray], selected: Any) -> dict[str, np.ndarray]:
        """The samples `selected` (an index sequence or range) of every input, along the batch axis."""
        return {name: (value if (dim := self.batch_dim(name)) is None
                       else np.ascontiguousarray(np.take(value, selected, axis=dim)))
                for name, value in inputs.items()}

    def inputs_for(self, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
        """Inputs with the given dynamic axis sizes, reproducible from `seed`."""
        rng = np.random.default_rng(seed)
        full = {**self.example_sizes(), **sizes}
        if self.make_inputs is not None:
            return {k: np.ascontiguousarray(v) for k, v in self.make_inputs(full, rng).items()}
        like = self.example_inputs
        if self.samples is not None:
            like = self._sample_pool()
            if self.batch_axis and all(full[a] == n for a, n in self._sizes_of(like).items()
                                       if a != self.batch_axis):
                count = next(iter(like.values())).shape[self.batch_dim(self.input_names[0]) or 0]
                wanted = full.get(self.batch_axis, count)
                picked = rng.choice(count, size=wanted, replace=wanted > count)
                return self.rows(like, picked)
        return {name: _draw_like(example, self._shape_for(name, full), rng)
                for name, example in like.items()}

    def _sizes_of(self, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """The size each dynamic axis has in `inputs`."""
        return {axis: int(inputs[tensor].shape[dim]) for tensor, dims in self.dynamic_axes.items()
                if tensor in inputs for dim, axis in dims.items()}

    def _sample_pool(self) -> dict[str, np.ndarray]:
        """samples(), once, checked against the example inputs (names, dtypes, ranks)."""
        if self._pool is None:
            assert self.samples is not None
            pool = {k: np.ascontiguousarray(v) for k, v in self.samples().items()}
            where = f"model {self.name!r}: samples()"
            if list(pool) != self.input_names:
                raise SpecError(f"{where} returned inputs {list(pool)}, expected {self.input_names}")
            for name, value in pool.items():
                example = self.example_inputs[name]
                if value.dtype != example.dtype or value.ndim != example.ndim:
                    raise SpecError(f"{where}: {name!r} is {value.dtype} of rank {value.ndim}; the "
                                    f"example is {example.dtype} of rank {example.ndim}")
                if self.batch_axis and self.batch_dim(name) is None:
                    raise SpecError(f"{where}: input {name!r} has no batch axis to take samples along")
            self._pool = pool
        return self._pool

    def _shape_for(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        shape = list(self.example_inputs[name].shape)
        for dim, axis in self.dynamic_axes.get(name, {}).items():
            shape[dim] = sizes[axis]
        return tuple(shape)


def _draw_like(example: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(example.dtype, np.floating):
        mean, std = float(example.mean()), float(example.std()) or 1.0
        return (rng.standard_normal(shape) * std + mean).astype(example.dtype)
    if np.issubdtype(example.dtype, np.integer):
        low, high = int(example.min()), int(example.max())
        return rng.integers(low, high + 1, size=shape, dtype=example.dtype)
    if example.dtype == np.bool_:
        return rng.random(shape) < max(float(example.mean()), 0.5)
    raise SpecError(f"cannot draw inputs of dtype {example.dtype}; give the spec a make_inputs")


def validate(spec: object, origin: str) -> ModelSpec:
    """Check a spec returned by `origin` (a model reference) and explain any problem."""
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"{origin} returned {type(spec).__name__}, expected modelparity.ModelSpec "
                        "(see the README's 'Bring your own model')")
    where = f"model {spec.name!r} ({origin})"
    import torch

    if not isinstance(spec.module, torch.nn.Module):
        raise SpecError(f"{where}: module is {type(spec.module).__name__}, expected a torch.nn.Module")
    if not spec.example_inputs:
        raise SpecError(f"{where}: example_inputs is empty; give at least one named numpy array")
    for name, value in spec.example_inputs.items():
        if not isinstance(value, np.ndarray):
            raise SpecError(f"{where}: example input {name!r} is {type(value).__name__}, "
                            "expected a numpy array")
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise SpecError(f"{where}: example input {name!r} contains NaN or Inf")
    if not spec.output_names:
        raise SpecError(f"{where}: output_names is empty; name every output of forward()")
    known = set(spec.example_inputs) | set(spec.output_names)
    for tensor, dims in spec.dynamic_axes.items():
        if tensor not in known:
            raise SpecError(f"{where}: dynamic_axes names {tensor!r}, which is neither an input "
                            f"({sorted(spec.example_inputs)}) nor an output ({spec.output_names})")
        for dim, axis in dims.items():
            rank = spec.example_inputs[tensor].ndim if tensor in spec.example_inputs else None
            if rank is not None and not -rank <= dim < rank:
                raise SpecError(f"{where}: dynamic axis {axis!r} is dim {dim} of input {tensor!r}, "
                                f"which has only {rank} dims (shape "
                                f"{spec.example_inputs[tensor].shape})")
            if axis not in spec.axis_ranges:
                raise SpecError(f"{where}: dynamic axis {axis!r} has no entry in axis_ranges; "
                                f"add axis_ranges={{{axis!r}: AxisRange(min, max)}}")
    for axis, size in spec.example_sizes().items():
        bounds = spec.axis_ranges[axis]
        if not bounds.allows(size):
            raise SpecError(f"{where}: the example has {axis}={size}, outside its declared range "
                            f"{bounds.min}..{bounds.max}"
                            + (f" (multiples of {bounds.multiple_of})" if bounds.multiple_of > 1 else ""))
    if spec.batch_axis is not None and spec.batch_axis not in spec.example_sizes():
        spec.batch_axis = None
    from modelparity.checks.tolerance import ToleranceConfigError, parse_overrides

    try:
        parse_overrides([{"match": k, **v} for k, v in spec.tolerances.items()], f"{where} tolerances")
    except ToleranceConfigError as error:
        raise SpecError(str(error)) from error
    _validate_custom_ops(spec, where)
    for name in spec.classifier_outputs:
        if name not in spec.output_names:
            raise SpecError(f"{where}: classifier output {name!r} is not in output_names")
    return spec


def _validate_custom_ops(spec: ModelSpec, where: str) -> None:
    from modelparity.custom_ops import CustomOp, torch_overload

    for op in spec.custom_ops:
        if not isinstance(op, CustomOp):
            raise SpecError(f"{where}: custom_ops holds {type(op).__name__}, expected "
                            "modelparity.custom_ops.CustomOp")
        try:
            torch_overload(op)
        except (AttributeError, RuntimeError) as error:
            raise SpecError(f"{where}: custom op {op.torch_op!r} is not registered with torch.library "
                            f"({error}); define it in the spec's module before the factory runs") from error
        for field_name in ("onnx_schema", "legacy_symbolic", "dynamo_translation", "onnxruntime_library"):
            function = getattr(op, field_name)
            if "<" in getattr(function, "__qualname__", "<"):
                raise SpecError(f"{where}: custom op {op.torch_op!r}: {field_name} must be a "
                                "module-level function (converters import it by name), not "
                                f"{function!r}")
