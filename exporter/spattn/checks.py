"""The input checks of ``spattn::SparseAttention`` in Python, as docs/op-spec.md's error table.

:func:`check_op_call` is what the torch op ``spattn::sparse_attention`` runs: strictly the node's
types (int32 integer inputs, float32 ``sinks``), like ONNX Runtime and TensorRT would see them.
Its messages have the spec's form ``SparseAttention: <name>: expected <what>, got <value>``.
Dims that are symbolic while tracing and values that do not exist yet (fake tensors) are skipped:
the exported node checks them at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from . import attributes

__all__ = [
    "FLOAT_DTYPES",
    "check_length",
    "check_attributes",
    "check_op_call",
]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WHERE = "SparseAttention"


def _fail(where: str, name: str, expect: str, got: Any) -> ValueError:
    return ValueError(f"{where}: {name}: expected {expect}, got {got}")


def _static(d: Any) -> int | None:
    """A dim known now (an int), else None (a symbolic dim while tracing)."""
    return d if isinstance(d, int) else None


def _shape(t: torch.Tensor) -> list[Any]:
    return [int(d) if isinstance(d, int) else str(d) for d in t.shape]


def check_length(name: str, length: Any, symbol: str, where: str = _WHERE) -> None:
    """``Lq``/``Lk`` at most :data:`attributes.MAX_LENGTH` (2^30), naming ``query``/``key``."""
    n = _static(length)
    if n is not None and n > attributes.MAX_LENGTH:
        raise _fail(where, name, f"{symbol} <= 2^30 = {attributes.MAX_LENGTH}", f"{symbol} = {n}")


def check_attributes(attrs: Mapping[str, Any], where: str = _WHERE) -> None:
    """Every pattern attribute present in ``attrs`` by the table's rule (type and range)."""
    for a in attributes.PATTERN_ATTRIBUTES:
        if a.name not in attrs:
            continue
        value = attrs[a.name]
        if isinstance(value, torch.Tensor) and value.dim() == 0:
            value = value.item()
        a.check(value, where)


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or t.device.type == "meta"


def check_op_call(
    q: Any,
    k: Any,
    v: Any,
    attrs: Mapping[str, Any],
    key_lengths: Any = None,
    block_indices: Any = None,
    global_mask: Any = None,
    key_starts: Any = None,
    sinks: Any = None,
    where: str = _WHERE,
) -> None:
    """Every input and attribute of one op call, as docs/op-spec.md's "Errors" lists them.

    Values (``key_lengths``, ``key_starts``, ``block_indices``, ``sinks``) are checked when the
    tensors hold data (not while tracing).
    """
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor):
            raise _fail(where, name, "a tensor", type(t).__name__)
        if t.dim() != 4:
            what = "[B, Hq, Lq, D]" if name == "query" else "[B, Hkv, Lk, D/Dv]"
            raise _fail(where, name, f"a rank-4 tensor {what}", f"shape {_shape(t)}")
        if t.dtype not in FLOAT_DTYPES:
            raise _fail(where, name, "dtype float32, float16 or bfloat16", t.dtype)
        if any(_static(d) == 0 for d in t.shape):
            raise _fail(where, name, "every dimension >= 1 (no empty tensor)", f"shape {_shape(t)}")
    for name, t in (("key", k), ("value", v)):
        if t.dtype != q.dtype:
            raise _fail(where, name, f"the dtype of query ({q.dtype})", t.dtype)
    check_attributes(attrs, where)
    b, hq, lq, d = (_static(x) for x in q.shape)
    kb, hkv, lk, kd = (_static(x) for x in k.shape)
    vb, vh, vl = (_static(x) for x in v.shape[:3])
    check_length("query", lq, "Lq", where)
    check_length("key", lk, "Lk", where)

    def differs(x: int | None, y: int | None) -> bool:
        return x is not None and y is not None and x != y

    if differs(kb, b):
        raise _fail(where, "key", f"batch {b} (as query)", kb)
    if differs(vb, b):
        raise _fail(where, "value", f"batch {b} (as query)", vb)
    if hq is not None and hkv is not None and hq % hkv != 0:
        raise _fail(where, "query", f"heads Hq a multiple of key heads Hkv = {hkv}", hq)
    if differs(vh, hkv):
        raise _fail(where, "value", f"{hkv} heads (as key)", vh)
    if differs(kd, d):
        raise _fail(where, "key", f"head dim {d} (as query)", kd)
    if differs(vl, lk):
        raise _fail(where, "value", f"length {lk} (as key)", vl)

    bs = attrs.get("block_size", attributes.attribute("block_size").default)
    nqb = None if lq is None else -(-lq // int(bs))
    nkb = None if lk is None else -(-lk // int(bs))
    per_batch = (
        ("key_lengths", key_lengths, torch.int32, [b], "[B]"),
        ("key_starts", key_starts, torch.int32, [b], "[B]"),
        ("global_mask", global_mask, torch.int32, [b, lk], "[B, Lk]"),
        ("sinks", sinks, torch.float32, [hq], "[Hq]"),
    )
    for name, t, dtype, dims, symbols in per_batch:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise _fail(where, name, "a tensor", type(t).__name__)
        if t.dtype != dtype:
            kind = "float32" if dtype == torch.float32 else "int32"
            raise _fail(where, name, f"a tensor of dtype {kind}", t.dtype)
        if t.dim() != len(dims) or any(
            differs(_static(got), want) for got, want in zip(t.shape, dims, strict=False)
        ):
            want_s = ", ".join("?" if x is None else str(x) for x in dims)
            raise _fail(where, name, f"shape {symbols} = [{want_s}]", _shape(t))
    if block_indices is not None:
        t = block_indices
        if not isinstance(t, torch.Tensor):
            raise _fail(where, "block_indices", "a tensor", type(t).__name__)
        if t.dtype != torch.int32:
            raise _fail(where, "block_indices", "a tensor of dtype int32", t.dtype)
        if t.dim() != 3:
            raise _fail(where, "block_indices", "a rank-3 tensor [Hl, nqb, K]", _shape(t))
        hl, rows = _static(t.shape[0]), _static(t.shape[1])
        if (hl is not None and hq is not None and hl not in (1, hq)) or differs(rows, nqb):
            raise _fail(
                where,
                "block_indices",
                f"shape [Hl in {{1, {hq}}}, ceil(Lq / block_size) = {nqb}, K]",
                _shape(t),
            )

    tensors = [x for x in (key_lengths, key_starts, block_indices, sinks) if x is not None]
    if any(_is_fake(x) for x in (q, *tensors)) or lk is None:
        return
    if key_lengths is not None and key_lengths.numel():
        bad = ((key_lengths < 0) | (key_lengths > lk)).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            raise _fail(
                where, "key_lengths", f"values in [0, Lk = {lk}]", f"{int(key_lengths[i])} at b={i}"
            )
    if key_starts is not None and key_starts.numel():
        hi = key_lengths if key_lengths is not None else torch.full_like(key_starts, lk)
        bad = ((key_starts < 0) | (key_starts > hi)).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            upper = f"key_lengths[b] = {int(hi[i])}" if key_lengths is not None else f"Lk = {lk}"
            raise _fail(
                where, "key_starts", f"values in [0, {upper}]", f"{int(key_starts[i])} at b={i}"
            )
    if block_indices is not None and block_indices.numel() and nkb is not None:
        bad = ((block_indices < -1) | (block_indices >= nkb)).nonzero()
        if bad.numel():
            h, r, c = (int(x) for x in bad[0])
            raise _fail(
                where,
                "block_indices",
                f"entries in [-1, ceil(Lk / block_size) = {nkb})",
                f"{int(block_indices[h, r, c])} at [{h}, {r}, {c}]",
            )
    if sinks is not None:
        s = sinks.detach()
        bad = (torch.isnan(s) | (s == math.inf)).nonzero()
        if bad.numel():
            h = int(bad[0, 0])
            raise _fail(where, "sinks", "no NaN or +inf (-inf: no sink)", f"{float(s[h])} at h={h}")
