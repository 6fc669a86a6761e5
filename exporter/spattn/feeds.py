"""Model inputs ("feeds"): generated from the graph's input specs, read from ``.npz`` files or
taken from a factory's example tensors, and checked against the model's inputs.

Examples
--------
>>> from spattn.modelio import TensorSpec
>>> make_feeds([TensorSpec("x", 1, ["batch", "seq", 8])], batch=2, seq_len=16)["x"].shape
(2, 16, 8)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .modelio import NUMPY_TYPES, TensorSpec

__all__ = [
    "parse_shape_overrides",
    "resolve_dims",
    "make_feeds",
    "check_feeds",
    "load_feeds",
    "feeds_from_tensors",
]


def parse_shape_overrides(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,128,64", "key_lengths=1"]`` -> ``{"x": (1, 128, 64), "key_lengths": (1,)}``.

    Raises
    ------
    ValueError
        A malformed item (the command line reports it as a usage error).
    """
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        if not sep:
            name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ValueError(f"{item!r}: expected NAME=D0,D1,... with dims >= 1 (e.g. x=1,256,64)")
        out[name] = shape
    return out


def resolve_dims(
    specs: Sequence[TensorSpec], batch: int, seq_len: int, overrides: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    symbols: dict[str, int] = {}
    for s in specs:  # explicit shapes also set the batch and sequence of the other inputs
        if s.name in overrides and s.dims:
            shape = overrides[s.name]
            if not isinstance(s.dims[0], int) and shape:
                batch = shape[0]
            if len(s.dims) >= 2 and len(shape) >= 2 and not isinstance(s.dims[1], int):
                seq_len = shape[1]
    for s in specs:  # symbols fixed by explicit shapes first
        if s.name in overrides and s.dims is not None:
            for d, v in zip(s.dims, overrides[s.name], strict=False):
                if isinstance(d, str):
                    symbols.setdefault(d, v)
    shapes: dict[str, tuple[int, ...]] = {}
    for s in specs:
        if s.name in overrides:
            shapes[s.name] = tuple(overrides[s.name])
            continue
        if s.dims is None:
            raise UserError(
                f"input {s.name!r} has no known rank; give its shape with "
                f"--shape {s.name}=D0,D1,... or its values with --inputs FILE.npz"
            )
        resolved: list[int] = []
        for axis, d in enumerate(s.dims):
            if isinstance(d, int) and d > 0:
                resolved.append(d)
            elif isinstance(d, str) and d in symbols:
                resolved.append(symbols[d])
            else:
                v = batch if axis == 0 else seq_len
                if isinstance(d, str):
                    symbols[d] = v
                resolved.append(v)
        shapes[s.name] = tuple(resolved)
    return shapes


def make_feeds(
    specs: Sequence[TensorSpec],
    batch: int = 1,
    seq_len: int = 128,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Deterministic inputs for a model: standard normal floats, integers = the sequence length.

    Dynamic dims take ``batch`` (axis 0) or ``seq_len`` (other axes); a symbolic dim shared by
    several inputs takes one value; an explicit shape in ``shapes`` sets the batch and sequence
    of the others. Integer inputs (``key_lengths``) hold the sequence length (axis 1 of the
    first floating-point input of rank >= 2): no padding. bfloat16 inputs are float32 arrays
    holding bfloat16 values.

    Examples
    --------
    >>> spec = TensorSpec("x", 1, ["batch", "seq", 8])
    >>> make_feeds([spec], batch=2, seq_len=16)["x"].shape
    (2, 16, 8)
    """
    shapes = resolve_dims(specs, batch, seq_len, shapes or {})
    check_feeds(specs, {}, shapes=shapes)
    float_shapes = [shapes[s.name] for s in specs if s.is_float and len(shapes[s.name]) >= 2]
    fill = float_shapes[0][1] if float_shapes else seq_len
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = shapes[s.name]
        if s.is_float:
            x = rng.standard_normal(shape).astype(np.float32)
            feeds[s.name] = _round_to(x, s)
        elif s.elem_type == 9:
            feeds[s.name] = np.ones(shape, dtype=np.bool_)
        elif s.elem_type in NUMPY_TYPES:
            feeds[s.name] = np.full(shape, fill, dtype=NUMPY_TYPES[s.elem_type])
        else:
            raise UserError(
                f"input {s.name!r} has type {s.dtype_name}, which spattn cannot "
                "generate; give its values with --inputs FILE.npz"
            )
    return feeds


def _round_to(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.elem_type == 16:  # bfloat16 values, kept as float32 (numpy has no bfloat16)
        from .runtime import to_bfloat16_bits

        return (to_bfloat16_bits(x).astype(np.uint32) << 16).view(np.float32)
    return x.astype(NUMPY_TYPES[spec.elem_type])


def check_feeds(
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "the inputs",
) -> None:
    """Check names, ranks, static dims, shared symbolic dims and dtype kinds.

    ``shapes`` (planned shapes) is checked instead of the arrays when given.

    Raises
    ------
    UserError
        Naming the input, what the model expects and what was given.
    """
    names = [s.name for s in specs]
    if shapes is None:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UserError(
                f"{source} lack input(s) {', '.join(map(repr, missing))}; the model "
                f"takes {', '.join(map(repr, names))}"
            )
        extra = [n for n in feeds if n not in names]
        if extra:
            raise UserError(
                f"{source} have array(s) {', '.join(map(repr, extra))} that the "
                f"model does not take; it takes {', '.join(map(repr, names))}"
            )
        shapes = {n: tuple(np.shape(feeds[n])) for n in names}
    symbols: dict[str, tuple[int, str]] = {}
    for s in specs:
        shape = shapes[s.name]
        expect = f"expected shape {s.shape_text()} ({s.dtype_name})"
        if s.dims is not None and len(shape) != len(s.dims):
            raise UserError(
                f"input {s.name!r}: {expect}, got {list(shape)} from {source}: rank "
                f"{len(shape)} instead of {len(s.dims)}"
            )
        for axis, (d, v) in enumerate(zip(s.dims or [], shape, strict=False)):
            if isinstance(d, int) and d > 0 and d != v:
                raise UserError(
                    f"input {s.name!r}: {expect}, got {list(shape)} from {source}: "
                    f"dim {axis} must be {d}"
                )
            if isinstance(d, str):
                if d in symbols and symbols[d][0] != v:
                    other_v, other = symbols[d]
                    raise UserError(
                        f"input {s.name!r}: dim {axis} ({d}) is {v} but input "
                        f"{other!r} has {d} = {other_v} in {source}; dims with one "
                        "name must agree"
                    )
                symbols.setdefault(d, (v, s.name))
        if s.name in feeds:
            a = np.asarray(feeds[s.name])
            if s.is_float != (a.dtype.kind == "f"):
                raise UserError(f"input {s.name!r}: {expect}, got dtype {a.dtype} from {source}")


def load_feeds(path: str | os.PathLike, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Read inputs from an ``.npz`` file (one array per input name) and check them.

    Float arrays are cast to the input's type (bfloat16 inputs: rounded, kept as float32).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{path}: no such file; give an .npz with one array per model input "
            "(`spattn run --save-inputs FILE.npz` writes one)"
        )
    try:
        with np.load(str(p), allow_pickle=False) as z:
            feeds = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(
            f"{path}: not a readable .npz file ({e}); write it with numpy.savez"
        ) from None
    check_feeds(specs, feeds, source=str(path))
    out = {}
    for s in specs:
        a = np.asarray(feeds[s.name])
        out[s.name] = (
            _round_to(a.astype(np.float32), s)
            if s.is_float
            else a.astype(NUMPY_TYPES.get(s.elem_type, a.dtype))
        )
    return out


def feeds_from_tensors(specs: Sequence[TensorSpec], tensors: Sequence[Any]) -> dict[str, Any]:
    """Map a model's example tensors (in ``forward`` order) onto the ONNX inputs, as numpy."""
    ts = [t for t in tensors if hasattr(t, "detach")]
    if len(ts) < len(specs):
        raise UserError(
            f"the factory gives {len(ts)} tensor input(s) but the ONNX model takes "
            f"{len(specs)}; is it the model this factory exported?"
        )
    feeds = {}
    for s, t in zip(specs, ts, strict=False):
        t = t.detach().cpu()
        a = t.float().numpy() if s.is_float else t.numpy()
        feeds[s.name] = _round_to(a, s) if s.is_float else a.astype(NUMPY_TYPES[s.elem_type])
    check_feeds(specs, feeds, source="the factory's example inputs")
    return feeds
