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
    "integer_roles",
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


def integer_roles(model: Any) -> dict[str, tuple[str, int]]:
    """What each integer graph input is, from the nodes that read it: ``("lengths", 0)`` for a
    SparseAttention ``key_lengths``, ``("indices", n)`` for the indices of a Gather over a
    constant table of ``n`` rows (token ids: valid values ``0 ... n-1``). Inputs read through a
    Cast count too; other integer inputs are not listed.
    """
    from . import schema

    consts: dict[str, tuple[int, ...]] = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = tuple(a.t.dims)
    readers: dict[str, list[tuple[Any, int]]] = {}
    for n in model.graph.node:
        for k, x in enumerate(n.input):
            readers.setdefault(x, []).append((n, k))
    roles: dict[str, tuple[str, int]] = {}
    ints = {6, 7, 2, 3, 4, 5, 12, 13}
    for v in model.graph.input:
        if v.type.tensor_type.elem_type not in ints:
            continue
        values = [v.name] + [
            n.output[0] for n, _ in readers.get(v.name, []) if n.op_type == "Cast" and n.output
        ]
        for value in values:
            for n, k in readers.get(value, []):
                if n.domain == schema.DOMAIN and n.op_type == schema.OP_TYPE and k == 3:
                    roles.setdefault(v.name, ("lengths", 0))
                elif n.op_type == "Gather" and k == 1 and n.input[0] in consts:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                    dims = consts[n.input[0]]
                    if dims:
                        roles.setdefault(v.name, ("indices", int(dims[axis])))
    return roles


def make_feeds(
    specs: Sequence[TensorSpec],
    batch: int = 1,
    seq_len: int = 128,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    roles: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic inputs for a model: standard normal floats; integers by their role.

    Dynamic dims take ``batch`` (axis 0) or ``seq_len`` (other axes); a symbolic dim shared by
    several inputs takes one value; an explicit shape in ``shapes`` sets the batch and sequence
    of the others. Integer inputs get values valid for what reads them (``roles``, from
    :func:`integer_roles`): ``key_lengths`` (and inputs named ``*length*``) hold the sequence
    length (axis 1 of the first floating-point input of rank >= 2: no padding), token ids
    random values below the table's size, masks (``*mask*``) ones, other integers zeros.
    bfloat16 inputs are float32 arrays holding bfloat16 values.

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
            role, bound = (roles or {}).get(s.name, ("", 0))
            np_type = NUMPY_TYPES[s.elem_type]
            if role == "indices":
                feeds[s.name] = rng.integers(0, max(bound, 1), size=shape).astype(np_type)
            elif role == "lengths" or "length" in s.name.lower():
                feeds[s.name] = np.full(shape, fill, dtype=np_type)
            elif "mask" in s.name.lower():
                feeds[s.name] = np.ones(shape, dtype=np_type)
            else:
                feeds[s.name] = np.zeros(shape, dtype=np_type)
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

    Arrays must have the input's type: a cast would change the values the user meant to feed.
    The exceptions are lossless: bfloat16 inputs take float32 arrays (numpy has no bfloat16; the
    values are rounded to bfloat16), and integer arrays whose values fit the input's type.

    Raises
    ------
    UserError
        A missing or unreadable file, a missing or extra array, a wrong shape, or a wrong
        type (naming the input, both types and how to convert).
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
        want = np.dtype(NUMPY_TYPES.get(s.elem_type, a.dtype))
        if s.is_float and a.dtype != want:
            raise UserError(
                f"input {s.name!r}: the model takes {s.dtype_name}, {path} holds {a.dtype}; "
                f"save it as {want.name} (numpy: a.astype(np.{want.name})) to feed these values"
            )
        if not s.is_float and a.dtype != want:
            info = np.iinfo(want) if want.kind in "iu" else None
            if info is not None and a.size and (a.min() < info.min or a.max() > info.max):
                raise UserError(
                    f"input {s.name!r}: the model takes {s.dtype_name}, and values of "
                    f"{path} ({a.dtype}) do not fit it"
                )
        out[s.name] = (
            _round_to(a.astype(np.float32), s)
            if s.is_float
            else a.astype(NUMPY_TYPES.get(s.elem_type, a.dtype))
        )
    return out


def feeds_from_tensors(
    specs: Sequence[TensorSpec], tensors: Sequence[Any] | Mapping[str, Any]
) -> dict[str, Any]:
    """Map a model's example tensors onto the ONNX inputs, as numpy: a dict by input name
    (when it names every input), else in order (``forward`` order)."""
    if isinstance(tensors, Mapping):
        if all(s.name in tensors for s in specs):
            tensors = [tensors[s.name] for s in specs]
        else:
            tensors = list(tensors.values())
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
