"""The dense-mask float32 oracle of docs/op-spec.md.

Everything here follows the spec literally and favours clarity over speed: the mask is built as a
full ``[B, H, Lq, Lk]`` boolean tensor. Use :mod:`.blocksparse` for long sequences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "mix32",
    "random_block",
    "random_blocks",
    "resolve_scale",
    "pattern_fields",
    "allowed_mask",
    "reference_attention",
]

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_C1 = 0x7FEB352D
_C2 = 0x846CA68B


def _mul32(x: Any, c: int) -> Any:
    """``x * c mod 2**32`` without leaving int64 (x < 2**32 split into 16-bit halves of c)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def mix32(x: Any) -> Any:
    """The spec's 32-bit mixer on a Python int, a numpy int64 array or a torch int64 tensor.

    Examples
    --------
    >>> mix32(0) == 0
    True
    """
    if isinstance(x, int):
        x &= _M32
        x ^= x >> 16
        x = (x * _C1) & _M32
        x ^= x >> 15
        x = (x * _C2) & _M32
        x ^= x >> 16
        return x
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    x = x ^ (x >> 16)
    return x


def random_block(seed: Any, h: Any, qb: Any, r: Any, num_key_blocks: Any) -> Any:
    """Random key block number ``r`` of query head ``h`` and query block ``qb`` (spec hash).

    Works on Python ints or broadcastable int64 tensors/arrays.

    Examples
    --------
    >>> random_block(0, 0, 0, 0, 16)
    14
    >>> random_block(42, 3, 7, 1, 256)
    95
    """
    return random_block_tensor(mix32((seed + _GOLDEN) & _M32), h, qb, r, num_key_blocks)


def random_blocks(
    seed: int, heads: int, qb: torch.Tensor, num_random: int, num_key_blocks: int
) -> torch.Tensor:
    """All random key blocks ``[heads, len(qb), num_random]`` (int64) of the given query blocks.

    Examples
    --------
    >>> random_blocks(0, 1, torch.tensor([0]), 2, 16).tolist()
    [[[14, 11]]]
    """
    h = torch.arange(heads, dtype=torch.int64).view(-1, 1, 1)
    q = qb.to(torch.int64).view(1, -1, 1)
    r = torch.arange(num_random, dtype=torch.int64).view(1, 1, -1)
    x = mix32((seed + _GOLDEN) & _M32)
    return random_block_tensor(x, h, q, r, num_key_blocks)


def random_block_tensor(x0: int, h: Any, qb: Any, r: Any, nkb: Any) -> Any:
    """The hash's last three rounds from ``x0 = mix32(seed + 0x9e3779b9)``."""
    x = mix32(x0 ^ h)
    x = mix32(x ^ qb)
    x = mix32(x ^ r)
    return x % nkb


_FIELDS = (
    "window_left",
    "window_right",
    "causal",
    "num_global",
    "stride",
    "block_size",
    "num_random",
    "seed",
)
_DEFAULTS = {
    "window_left": -1,
    "window_right": -1,
    "causal": 0,
    "num_global": 0,
    "stride": 0,
    "block_size": 64,
    "num_random": 0,
    "seed": 0,
}


def pattern_fields(pattern: Any) -> dict[str, int]:
    """The integer attributes of a :class:`~.patterns.Pattern` or an attribute dict.

    Missing attributes take the spec defaults; ``causal`` becomes 0/1.

    Examples
    --------
    >>> pattern_fields({"window_left": 3})["window_right"]
    -1
    """
    out = dict(_DEFAULTS)
    if pattern is None:
        return out
    for name in _FIELDS:
        if isinstance(pattern, dict):
            if name in pattern:
                out[name] = int(pattern[name])
        else:
            out[name] = int(getattr(pattern, name))
    return out


def resolve_scale(pattern: Any, head_dim: int, scale: float | None = None) -> float:
    """The scale of a call: the argument, else the pattern's, else ``1/sqrt(D)``; 0 is default.

    Examples
    --------
    >>> resolve_scale(None, 64)
    0.125
    """
    if scale is None and pattern is not None:
        scale = pattern.get("scale") if isinstance(pattern, dict) else pattern.scale
    if scale is None or scale == 0.0:
        return 1.0 / math.sqrt(head_dim)
    return float(scale)


def _as_int_tensor(x: Any) -> torch.Tensor | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.int64)
    return torch.as_tensor(np.asarray(x), dtype=torch.int64)


def resolve_block_indices(pattern: Any, lq: int, lk: int, block_indices: Any = None) -> Any:
    """The explicit ``block_indices`` argument, else the pattern's layout at ``(lq, lk)``."""
    if block_indices is not None:
        return block_indices
    if pattern is not None and not isinstance(pattern, dict):
        getter = getattr(pattern, "layout_at", None)
        if getter is not None:
            return getter(lq, lk)
    return None


def allowed_mask(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int,
    key_lengths: Any = None,
    block_indices: Any = None,
) -> torch.Tensor:
    """The spec's ``allowed(b, h, i, j)`` as a bool tensor ``[B, heads, lq, lk]``.

    ``B`` is ``len(key_lengths)``, or 1 without key lengths. ``block_indices`` defaults to the
    pattern's own layout (if any).

    Examples
    --------
    >>> from spattn import Pattern
    >>> allowed_mask(Pattern.sliding_window(1), 4, 4, 1)[0, 0].int().tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    """
    f = pattern_fields(pattern)
    block_indices = _as_int_tensor(resolve_block_indices(pattern, lq, lk, block_indices))
    kl = _as_int_tensor(key_lengths)
    wl, wr, causal = f["window_left"], f["window_right"], f["causal"]
    g, s, bs, nr = f["num_global"], f["stride"], f["block_size"], f["num_random"]
    has_listed = block_indices is not None
    other = g > 0 or s > 0 or nr > 0 or has_listed
    local_on = not (wl == -1 and wr == -1 and other)

    i = torch.arange(lq, dtype=torch.int64).view(lq, 1)
    j = torch.arange(lk, dtype=torch.int64).view(1, lk)
    p = i + (lk - lq)
    d = p - j  # how far the key lies before the query

    # LOCAL
    if local_on:
        local = torch.ones(lq, lk, dtype=torch.bool)
        if wl != -1:
            local &= d <= wl
        if wr != -1:
            local &= -d <= wr
    else:
        local = torch.zeros(lq, lk, dtype=torch.bool)
    # GLOBAL (off when num_global = 0; queries at negative positions (Lq > Lk) are never global)
    if g > 0:
        glob = (j < g) | ((p >= 0) & (p < g))
    else:
        glob = torch.zeros(lq, lk, dtype=torch.bool)
    # STRIDED
    strided = (d % s == 0) if s > 0 else torch.zeros(lq, lk, dtype=torch.bool)
    struct = (local | glob | strided).unsqueeze(0).expand(heads, lq, lk).clone()

    # RANDOM and LISTED, through a [heads, nqb, nkb] table of selected blocks.
    nqb, nkb = -(-lq // bs), -(-lk // bs)
    if nr > 0 or has_listed:
        table = torch.zeros(heads, nqb, nkb + 1, dtype=torch.bool)  # last column: the -1 pad
        if nr > 0:
            rb = random_blocks(f["seed"], heads, torch.arange(nqb), nr, nkb)
            table.scatter_(2, rb, True)
        if has_listed:
            hl = block_indices.shape[0]
            if hl not in (1, heads) or block_indices.shape[1] != nqb:
                raise ValueError(
                    f"block_indices: expected shape [1 or {heads}, {nqb}, K], "
                    f"got {list(block_indices.shape)}"
                )
            bi = block_indices.expand(heads, nqb, block_indices.shape[2])
            bi = torch.where(bi < 0, torch.full_like(bi, nkb), bi)
            table.scatter_(2, bi, True)
        qbi = (torch.arange(lq) // bs).view(1, lq, 1)
        kbj = (torch.arange(lk) // bs).view(1, 1, lk)
        hh = torch.arange(heads).view(heads, 1, 1)
        struct |= table[hh, qbi, kbj]

    base = torch.ones(lq, lk, dtype=torch.bool)
    if causal:
        base &= j <= p
    mask = (base.unsqueeze(0) & struct).unsqueeze(0)  # [1, H, Lq, Lk]
    if kl is not None:
        valid = torch.arange(lk).view(1, lk) < kl.view(-1, 1)  # [B, Lk]
        mask = mask & valid.view(-1, 1, 1, lk)
    return mask


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() != 4:
            raise ValueError(f"SparseAttention: {name}: expected rank 4, got {t.dim()}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"SparseAttention: query: heads {q.shape[1]} not a multiple of kv heads {k.shape[1]}"
        )
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        raise ValueError("SparseAttention: key/value: batch differs from query")
    if k.shape[3] != q.shape[3]:
        raise ValueError(f"SparseAttention: key: head dim {k.shape[3]} != {q.shape[3]}")
    if v.shape[2] != k.shape[2] or v.shape[1] != k.shape[1]:
        raise ValueError("SparseAttention: value: heads/length differ from key")


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Dense-mask attention in float32, the oracle of every test.

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``[B, Hq, Lq, D]``, ``[B, Hkv, Lk, D]``, ``[B, Hkv, Lk, Dv]``; any float dtype (upcast).
    pattern : Pattern or dict
        The op attributes.
    key_lengths : tensor-like, optional
        ``[B]`` valid keys per batch.
    block_indices : tensor-like, optional
        ``[Hl, ceil(Lq / block_size), K]`` listed key blocks (defaults to the pattern's layout).
    scale : float, optional
        Overrides the pattern's scale; default ``1/sqrt(D)``.

    Returns
    -------
    torch.Tensor
        float32 ``[B, Hq, Lq, Dv]``; rows with no allowed key are zeros.

    Examples
    --------
    >>> from spattn import Pattern
    >>> q = torch.randn(1, 2, 8, 16)
    >>> reference_attention(q, q, q, Pattern.sliding_window(2)).shape
    torch.Size([1, 2, 8, 16])
    """
    _check_qkv(q, k, v)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    mask = allowed_mask(pattern, lq, lk, hq, key_lengths, block_indices)
    mask = mask.expand(b, hq, lq, lk)
    group = hq // hkv
    qf = q.to(torch.float32)
    kf = k.to(torch.float32).repeat_interleave(group, dim=1)
    vf = v.to(torch.float32).repeat_interleave(group, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * resolve_scale(pattern, d, scale)
    s = s.masked_fill(~mask, float("-inf"))
    any_row = mask.any(dim=-1, keepdim=True)
    s = torch.where(any_row, s, torch.zeros_like(s))
    w = torch.softmax(s, dim=-1) * any_row
    return torch.matmul(w, vf)
