"""``sparse_attention``: one entry point over the reference, block-sparse and custom-op paths.

Every argument is checked here, before any path runs, with messages naming the argument and the
expectation (docs/op-spec.md, "Errors"). Checks of tensor values (key lengths, block indices,
sinks) need the values, so they run eagerly only: while tracing (torch.export, ONNX export,
torch.compile) the shapes and dtypes are checked and the exported op checks the values at run time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import attributes, blocksparse, checks, reference

__all__ = ["sparse_attention", "key_range_from_padding_mask"]

_IMPLS = ("auto", "reference", "blocksparse", "op")
_FLOATS = checks.FLOAT_DTYPES
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _is_tracing() -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    try:
        from torch.fx.experimental.proxy_tensor import get_proxy_mode

        return get_proxy_mode() is not None
    except Exception:  # pragma: no cover - private API moved
        return False


def _fail(name: str, expect: str, got: Any) -> ValueError:
    return ValueError(f"sparse_attention: {name}: expected {expect}, got {got}")


def _as_tensor(name: str, x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as e:
            raise _fail(name, "a tensor or array", type(x).__name__) from e
    if t.device != device:
        if t.device.type == "cpu" or device.type == "cpu":
            t = t.to(device)
        else:
            raise _fail(name, f"a tensor on {device} (as query)", t.device)
    return t


def _shape(t: torch.Tensor) -> list[int]:
    return [int(d) if isinstance(d, int) else d for d in t.shape]


def _check_int_input(
    name: str, x: Any, shape: tuple[Any, ...], symbols: str, device: torch.device
) -> torch.Tensor | None:
    """An integer input as int32 on ``device``: dtype, rank and the known dims checked."""
    if x is None:
        return None
    t = _as_tensor(name, x, device)
    if t.dtype not in _INTS and not (name == "global_mask" and t.dtype == torch.bool):
        kinds = "an integer or bool" if name == "global_mask" else "an integer (int32)"
        raise _fail(name, f"{kinds} tensor", t.dtype)
    if t.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(t.shape, shape, strict=False)
    ):
        raise _fail(name, f"shape [{symbols}] = {list(shape)}", _shape(t))
    if t.dtype == torch.int64 and t.numel() and not _is_tracing():
        lo, hi = int(t.min()), int(t.max())
        if lo < -(2**31) or hi > attributes.INT32_MAX:
            raise _fail(name, "values that fit in int32", f"[{lo}, {hi}]")
    return t.to(torch.int32)


def _check_scalar_attr(name: str, value: Any) -> float | None:
    if value is None:
        return None
    a = attributes.attribute(name)
    why = a.problem(value.item() if isinstance(value, (np.generic, torch.Tensor)) else value)
    if why is not None:
        raise _fail(name, why, repr(value))
    return float(value)


def _validate(
    q: Any,
    k: Any,
    v: Any,
    pattern: Any,
    key_lengths: Any,
    block_indices: Any,
    global_mask: Any,
    key_starts: Any,
    sinks: Any,
    scale: Any,
) -> dict[str, Any]:
    """Check every argument; return the inputs converted (int32, float32 sinks, on q's device)."""
    from .patterns import Pattern

    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor):
            raise _fail(name, "a torch.Tensor", type(t).__name__)
        if t.dim() != 4:
            what = "[B, Hq, Lq, D]" if name == "query" else "[B, Hkv, Lk, D/Dv]"
            raise _fail(name, f"a rank-4 tensor {what}", f"shape {_shape(t)}")
        if t.dtype not in _FLOATS:
            raise _fail(name, "dtype float32, float16 or bfloat16", t.dtype)
        if any(d == 0 for d in t.shape):
            raise _fail(name, "every dimension >= 1 (no empty tensor)", f"shape {_shape(t)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        which = "key" if k.dtype != q.dtype else "value"
        raise _fail(which, f"the dtype of query ({q.dtype})", (k if which == "key" else v).dtype)
    for name, t in (("key", k), ("value", v)):
        if t.device != q.device:
            raise _fail(name, f"a tensor on {q.device} (as query)", t.device)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    checks.check_length("query", lq, "Lq", "sparse_attention")
    checks.check_length("key", lk, "Lk", "sparse_attention")
    if k.shape[0] != b:
        raise _fail("key", f"batch {b} (as query)", int(k.shape[0]))
    if v.shape[0] != b:
        raise _fail("value", f"batch {b} (as query)", int(v.shape[0]))
    if hq % hkv != 0:
        raise _fail("query", f"heads Hq a multiple of key heads Hkv = {hkv}", int(hq))
    if v.shape[1] != hkv:
        raise _fail("value", f"{hkv} heads (as key)", int(v.shape[1]))
    if k.shape[3] != d:
        raise _fail("key", f"head dim {d} (as query)", int(k.shape[3]))
    if v.shape[2] != lk:
        raise _fail("value", f"length {lk} (as key)", int(v.shape[2]))

    if not isinstance(pattern, Pattern):
        if isinstance(pattern, dict):
            pattern = Pattern.from_attributes(pattern)
        else:
            raise _fail("pattern", "a spattn.Pattern", type(pattern).__name__)
    scale = _check_scalar_attr("scale", scale)

    dev = q.device
    kl = _check_int_input("key_lengths", key_lengths, (b,), "B", dev)
    ks = _check_int_input("key_starts", key_starts, (b,), "B", dev)
    gm = _check_int_input("global_mask", global_mask, (b, lk), "B, Lk", dev)
    bs = pattern.block_size
    nqb, nkb = -(-lq // bs), -(-lk // bs)
    bi = None
    if block_indices is not None:
        bi = _as_tensor("block_indices", block_indices, dev)
        if bi.dtype not in _INTS:
            raise _fail("block_indices", "an integer (int32) tensor", bi.dtype)
        if bi.dim() != 3 or bi.shape[0] not in (1, hq) or bi.shape[1] != nqb:
            raise _fail(
                "block_indices",
                f"shape [Hl in {{1, {hq}}}, ceil(Lq / block_size) = {nqb}, K]",
                _shape(bi),
            )
    sk = None
    if sinks is not None:
        sk = _as_tensor("sinks", sinks, dev)
        if not sk.is_floating_point():
            raise _fail("sinks", "a floating-point tensor (float32)", sk.dtype)
        if sk.dim() != 1 or sk.shape[0] != hq:
            raise _fail("sinks", f"shape [Hq] = [{hq}]", _shape(sk))
        sk = sk.to(torch.float32)

    if not _is_tracing():
        if kl is not None and kl.numel():
            bad = ((kl < 0) | (kl > lk)).nonzero()
            if bad.numel():
                i = int(bad[0, 0])
                raise _fail("key_lengths", f"values in [0, Lk = {lk}]", f"{int(kl[i])} at b={i}")
        if ks is not None and ks.numel():
            hi = kl if kl is not None else torch.full_like(ks, int(lk))
            bad = ((ks < 0) | (ks > hi)).nonzero()
            if bad.numel():
                i = int(bad[0, 0])
                upper = f"key_lengths[b] = {int(hi[i])}" if kl is not None else f"Lk = {lk}"
                raise _fail("key_starts", f"values in [0, {upper}]", f"{int(ks[i])} at b={i}")
        if bi is not None and bi.numel():
            bad = ((bi < -1) | (bi >= nkb)).nonzero()
            if bad.numel():
                h, r, c = (int(x) for x in bad[0])
                raise _fail(
                    "block_indices",
                    f"entries in [-1, ceil(Lk / block_size) = {nkb})",
                    f"{int(bi[h, r, c])} at [{h}, {r}, {c}]",
                )
        if sk is not None:
            bad = (torch.isnan(sk) | (sk == math.inf)).nonzero()
            if bad.numel():
                h = int(bad[0, 0])
                raise _fail("sinks", "no NaN or +inf (-inf: no sink)", f"{float(sk[h])} at h={h}")
    return {
        "pattern": pattern,
        "scale": scale,
        "key_lengths": kl,
        "block_indices": None if bi is None else bi.to(torch.int32),
        "global_mask": gm,
        "key_starts": ks,
        "sinks": sk,
    }


def key_range_from_padding_mask(
    key_padding_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(key_starts, key_lengths)`` int32 ``[B]`` from a padding mask, left or right padded.

    ``key_padding_mask [B, Lk]``: True (or a negative/``-inf`` additive value) marks padding, as
    in ``nn.MultiheadAttention``. ``attention_mask [B, Lk]``: 1/True marks a real token, 0 padding,
    as in Hugging Face. The valid keys of each row must be one contiguous run
    (``key_starts <= j < key_lengths``); a row with none gives ``(0, 0)`` (its queries return
    zeros).

    A mask with holes (e.g. ``1 0 1``) cannot be expressed by the op: eagerly it raises
    ValueError. Traced (exported), the graph computes ``key_starts = key_lengths + 1`` for such a
    row, which the op rejects at run time (``key_starts`` greater than ``key_lengths``), so an
    exported model never silently computes something else.

    Examples
    --------
    >>> m = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    >>> s, n = key_range_from_padding_mask(attention_mask=m)
    >>> s.tolist(), n.tolist()
    ([2, 0], [5, 3])
    """
    if (key_padding_mask is None) == (attention_mask is None):
        raise ValueError(
            "key_range_from_padding_mask: expected exactly one of key_padding_mask and "
            "attention_mask"
        )
    name = "key_padding_mask" if key_padding_mask is not None else "attention_mask"
    mask = key_padding_mask if key_padding_mask is not None else attention_mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        got = f"shape {_shape(mask)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a rank-2 tensor [B, Lk], got {got}")
    if key_padding_mask is not None:
        valid = ~mask if mask.dtype == torch.bool else ~(mask < 0)
    else:
        valid = mask if mask.dtype == torch.bool else mask != 0
    lk = valid.shape[-1]
    idx = torch.arange(lk, device=valid.device).view(1, -1)
    count = valid.sum(dim=-1)
    ends = torch.where(valid, idx + 1, torch.zeros_like(idx)).amax(dim=-1)
    starts = torch.where(valid, idx, torch.full_like(idx, lk)).amin(dim=-1)
    starts = torch.minimum(starts, ends)  # a row without valid keys: (0, 0)
    holes = (ends - starts) != count
    if not _is_tracing() and bool(holes.any()):
        row = int(holes.nonzero()[0, 0])
        raise ValueError(
            f"{name}: expected the valid keys of each row to be one contiguous run (left or "
            f"right padding), got holes in row {row}: {valid[row].int().tolist()}"
        )
    # Traced: a row with holes gets key_starts > key_lengths, which the op rejects at run time.
    starts = torch.where(holes, ends + 1, starts)
    return starts.to(torch.int32), ends.to(torch.int32)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    global_mask: Any = None,
    key_starts: Any = None,
    sinks: Any = None,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Sparse attention with the semantics of ``spattn::SparseAttention`` (docs/op-spec.md).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``[B, Hq, Lq, D]``, ``[B, Hkv, Lk, D]``, ``[B, Hkv, Lk, Dv]``; ``Hq % Hkv == 0``; one of
        float32, float16, bfloat16.
    pattern : Pattern
        The sparsity pattern (the node's attributes, ``softcap`` included).
    key_lengths : tensor-like, optional
        ``[B]`` integers in ``[0, Lk]``: keys ``j >= key_lengths[b]`` are padding (right padding).
    block_indices : tensor-like, optional
        ``[Hl, ceil(Lq / block_size), K]`` listed key blocks (``Hl`` in ``{1, Hq}``, entries in
        ``[-1, ceil(Lk / block_size))``); defaults to the pattern's layout.
    global_mask : tensor-like, optional
        ``[B, Lk]`` integers or bools, nonzero marks a global token of the input (e.g.
        Longformer's ``global_attention_mask``): attended by every query, and attending every key.
    key_starts : tensor-like, optional
        ``[B]`` integers in ``[0, key_lengths[b]]``: keys ``j < key_starts[b]`` are padding (left
        padding).
    sinks : tensor-like, optional
        ``[Hq]`` floating point (used as float32), no NaN or ``+inf`` (``-inf``: no sink for
        that head): per query head, a logit in the softmax's denominator only (attention sinks).
    scale : float, optional
        Overrides ``pattern.scale``; default ``1/sqrt(D)``; finite and ``> 0``.
    impl : {"auto", "reference", "blocksparse", "op"}
        ``"op"`` calls ``torch.ops.spattn.sparse_attention`` (what torch.export and ONNX export
        see); ``"reference"`` is the dense-mask float32 oracle (differentiable);
        ``"blocksparse"`` the memory-efficient path. ``"auto"`` uses the op, or the reference when
        gradients are needed outside of tracing.

    Returns
    -------
    torch.Tensor
        ``[B, Hq, Lq, Dv]`` in ``q.dtype``.

    Raises
    ------
    ValueError
        For any invalid argument, naming it and the expectation.

    Examples
    --------
    >>> from spattn import Pattern
    >>> q = torch.randn(2, 4, 128, 32)
    >>> k = v = torch.randn(2, 2, 128, 32)
    >>> sparse_attention(q, k, v, Pattern.causal_sliding_window(16)).shape
    torch.Size([2, 4, 128, 32])
    """
    if impl not in _IMPLS:
        raise ValueError(f"sparse_attention: impl: expected one of {_IMPLS}, got {impl!r}")
    a = _validate(
        q, k, v, pattern, key_lengths, block_indices, global_mask, key_starts, sinks, scale
    )
    pattern, scale = a["pattern"], a["scale"]
    bi = a["block_indices"]
    if bi is None and pattern.block_indices is not None:
        bi = pattern.layout_at(int(q.shape[2]), int(k.shape[2]))
        bi = _validate(q, k, v, pattern, None, bi, None, None, None, None)["block_indices"]
    new = {n: a[n] for n in ("global_mask", "key_starts", "sinks") if a[n] is not None}
    if impl == "auto":
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, v, a["sinks"]) if t is not None
        )
        impl = "reference" if needs_grad and not _is_tracing() else "op"
    if impl == "reference":
        out = reference.reference_attention(q, k, v, pattern, a["key_lengths"], bi, scale, **new)
        return out.to(q.dtype)
    if impl == "blocksparse":
        return blocksparse.block_sparse_attention(
            q, k, v, pattern, a["key_lengths"], bi, scale, **new
        )
    from . import op  # noqa: F401 - registers torch.ops.spattn.sparse_attention

    args: dict[str, Any] = {"key_lengths": a["key_lengths"], "block_indices": bi}
    for x in attributes.PATTERN_ATTRIBUTES:
        value = getattr(pattern, x.name)
        if x.name == "scale":
            value = scale if scale is not None else value
            value = 0.0 if value is None else value
        args[x.name] = x.python_type(value)
    args.update(new)
    return torch.ops.spattn.sparse_attention(q, k, v, **args)
