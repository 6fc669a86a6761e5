"""The dense-mask float32 oracle of docs/op-spec.md.

Everything here follows the spec literally and favours clarity over speed: the mask is built as a
full ``[B, H, Lq, Lk]`` boolean tensor. Use :mod:`.blocksparse` for long sequences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .attributes import INT_ATTRIBUTES, attribute

__all__ = [
    "mix32",
    "random_block",
    "random_blocks",
    "resolve_scale",
    "resolve_softcap",
    "pattern_fields",
    "MaskRule",
    "allowed_mask",
    "rule_mask",
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


# The mask's integer parameters and their defaults, from the one attribute table.
_FIELDS = INT_ATTRIBUTES
_DEFAULTS = {name: attribute(name).default for name in _FIELDS}


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


def _as_int_tensor(x: Any, name: str = "input", allow_bool: bool = False) -> torch.Tensor | None:
    """An integer input as a CPU int64 tensor; float (or, unless allowed, bool) data is an error
    naming the input."""
    if x is None:
        return None
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.is_floating_point() or t.is_complex() or (t.dtype == torch.bool and not allow_bool):
        kinds = "an integer or bool" if allow_bool else "an integer (int32)"
        raise ValueError(f"SparseAttention: {name}: expected {kinds} tensor, got {t.dtype}")
    return t.to("cpu", torch.int64)


def resolve_softcap(pattern: Any) -> float:
    """The ``softcap`` attribute (0 = off) of a pattern or attribute dict, validated.

    Examples
    --------
    >>> resolve_softcap({"softcap": 50.0})
    50.0
    """
    if pattern is None:
        return 0.0
    c = pattern.get("softcap", 0.0) if isinstance(pattern, dict) else getattr(pattern, "softcap", 0)
    c = 0.0 if c is None else float(c)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"SparseAttention: softcap: expected a finite value >= 0 (0 off), got {c}")
    return c


def _sinks_input(sinks: Any, heads: int, device: Any) -> torch.Tensor | None:
    """``sinks`` as a float32 ``[Hq]`` tensor on ``device``: dtype, shape and values checked
    (NaN and +inf are errors; -inf means no sink for that head)."""
    if sinks is None:
        return None
    # Not detached: a learned sink (SparseMultiheadAttention(sinks=True)) trains through here.
    t = sinks if isinstance(sinks, torch.Tensor) else torch.as_tensor(np.asarray(sinks))
    if t.dtype != torch.float32:
        if isinstance(sinks, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"SparseAttention: sinks: expected a float32 tensor, got {t.dtype}")
        t = t.to(torch.float32)  # Python floats / float64 arrays: the literal values
    if t.dim() != 1 or t.shape[0] != heads:
        raise ValueError(
            f"SparseAttention: sinks: expected shape [Hq] = [{heads}], got {list(t.shape)}"
        )
    bad = torch.isnan(t.detach()) | (torch.isinf(t.detach()) & (t.detach() > 0))
    if bool(bad.any()):
        h = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"SparseAttention: sinks: expected finite values (or -inf: no sink), "
            f"got sinks[{h}] = {float(t[h])}"
        )
    return t.to(device)


def resolve_block_indices(pattern: Any, lq: int, lk: int, block_indices: Any = None) -> Any:
    """The explicit ``block_indices`` argument, else the pattern's layout at ``(lq, lk)``."""
    if block_indices is not None:
        return block_indices
    if pattern is not None and not isinstance(pattern, dict):
        getter = getattr(pattern, "layout_at", None)
        if getter is not None:
            return getter(lq, lk)
    return None


def _or(a: Any, b: Any) -> Any:
    """Union of two mask terms; ``False`` is the empty term (no tensor built for it)."""
    if a is False:
        return b
    if b is False:
        return a
    return a | b


class MaskRule:
    """The spec's ``allowed(b, h, i, j)`` for one call, evaluated on index tensors.

    Built once per call from the attributes and the integer inputs (which it validates), then
    evaluated by :meth:`allowed` on any broadcastable int64 tensors of query indices ``i``, key
    indices ``j``, query heads ``h`` and batches ``b``. The dense oracle evaluates it on full grids,
    the block-sparse path on its candidate slices, the benchmarks as a FlexAttention ``mask_mod``:
    this is the only Python statement of the mask (docs/op-spec.md, "The mask").

    Examples
    --------
    >>> rule = MaskRule({"window_left": 1, "window_right": 0}, 4, 4, heads=1)
    >>> rule.allowed(torch.arange(4).view(4, 1), torch.arange(4).view(1, 4)).int().tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """

    def __init__(
        self,
        pattern: Any,
        lq: int,
        lk: int,
        heads: int,
        key_lengths: Any = None,
        block_indices: Any = None,
        *,
        global_mask: Any = None,
        key_starts: Any = None,
        device: Any = None,
    ) -> None:
        f = pattern_fields(pattern)
        self.fields = f
        self.lq, self.lk, self.heads = int(lq), int(lk), int(heads)
        self.shift = self.lk - self.lq  # position of query i: p(i) = i + shift
        self.device = torch.device("cpu") if device is None else torch.device(device)
        bs = f["block_size"]
        if bs < 1:
            raise ValueError(f"SparseAttention: block_size: expected >= 1, got {bs}")
        self.block_size = bs
        self.nqb, self.nkb = -(-self.lq // bs), -(-self.lk // bs)
        bi = _as_int_tensor(resolve_block_indices(pattern, lq, lk, block_indices), "block_indices")
        if bi is not None:
            if bi.dim() != 3 or bi.shape[0] not in (1, heads) or bi.shape[1] != self.nqb:
                raise ValueError(
                    f"SparseAttention: block_indices: expected shape [1 or {heads}, {self.nqb}, "
                    f"K], got {list(bi.shape)}"
                )
            if bi.numel() and (int(bi.min()) < -1 or int(bi.max()) >= self.nkb):
                raise ValueError(
                    f"SparseAttention: block_indices: expected entries in [-1, {self.nkb}), got "
                    f"[{int(bi.min())}, {int(bi.max())}]"
                )
        kl = _as_int_tensor(key_lengths, "key_lengths")
        ks = _as_int_tensor(key_starts, "key_starts")
        gm = _as_int_tensor(global_mask, "global_mask", allow_bool=True)
        batch = None
        for name, t, rank in (
            ("key_lengths", kl, 1),
            ("key_starts", ks, 1),
            ("global_mask", gm, 2),
        ):
            if t is None:
                continue
            if t.dim() != rank or (rank == 2 and t.shape[1] != lk):
                want = "[B]" if rank == 1 else f"[B, Lk] = [B, {lk}]"
                raise ValueError(
                    f"SparseAttention: {name}: expected shape {want}, got {list(t.shape)}"
                )
            if batch is not None and t.shape[0] != batch:
                raise ValueError(
                    f"SparseAttention: {name}: expected batch {batch} (as the other per-batch "
                    f"inputs), got {t.shape[0]}"
                )
            batch = int(t.shape[0])
        if kl is not None and kl.numel() and (int(kl.min()) < 0 or int(kl.max()) > lk):
            raise ValueError(
                f"SparseAttention: key_lengths: expected values in [0, {lk}], got {kl.tolist()}"
            )
        if ks is not None and ks.numel():
            hi = kl if kl is not None else torch.full_like(ks, lk)
            bad = (ks < 0) | (ks > hi)
            if bool(bad.any()):
                b = int(bad.nonzero()[0, 0])
                upper = "key_lengths[b]" if kl is not None else f"Lk = {lk}"
                raise ValueError(
                    f"SparseAttention: key_starts: expected values in [0, {upper}] (key_starts[b] "
                    f"<= key_lengths[b]), got key_starts[{b}] = {int(ks[b])}"
                    + (f", key_lengths[{b}] = {int(kl[b])}" if kl is not None else "")
                )
        self._batch = batch
        self.key_starts = None if ks is None else ks.to(self.device)
        self.global_mask = None if gm is None else (gm != 0).to(self.device)  # bool [B, Lk]
        self.block_indices = bi
        self.key_lengths = None if kl is None else kl.to(self.device)
        self.has_blocks = f["num_random"] > 0 or bi is not None
        # The presence of global_mask (like that of block_indices), not its content, counts.
        other = f["num_global"] > 0 or gm is not None or f["stride"] > 0 or self.has_blocks
        unbounded = f["window_left"] == -1 and f["window_right"] == -1
        self.local_on = f["chunk_size"] > 0 or not (unbounded and other)
        self._table: torch.Tensor | None = None

    @property
    def batch(self) -> int | None:
        """Batch size fixed by the per-batch inputs, or None when the mask is the same for all."""
        return self._batch

    @property
    def head_dependent(self) -> bool:
        """True when heads differ (random or listed blocks): :meth:`allowed` then needs ``h``."""
        return self.has_blocks

    def valid_keys(self) -> torch.Tensor | None:
        """Bool ``[B, Lk]``: the keys that are not padding, or None when every key is valid."""
        if self.key_lengths is None and self.key_starts is None:
            return None
        j = torch.arange(self.lk, device=self.device).view(1, -1)
        ok = j >= 0
        if self.key_lengths is not None:
            ok = ok & (j < self.key_lengths.view(-1, 1))
        if self.key_starts is not None:
            ok = ok & (j >= self.key_starts.view(-1, 1))
        return ok

    def max_key(self) -> int:
        """One past the last key any batch may attend (``max(key_lengths)`` or ``Lk``)."""
        if self.key_lengths is None or self.key_lengths.numel() == 0:
            return self.lk
        return int(self.key_lengths.max())

    def global_rows(self) -> torch.Tensor:
        """Bool ``[Lq]``: queries that attend every key in at least one batch (their position is
        in ``[0, num_global)`` or marked in ``global_mask``)."""
        p = torch.arange(self.lq, device=self.device) + self.shift
        rows = (p >= 0) & (p < self.fields["num_global"])
        if self.global_mask is not None:
            any_b = self.global_mask.any(dim=0)  # [Lk]
            inside = (p >= 0) & (p < self.lk)
            rows = rows | (inside & any_b[p.clamp(0, self.lk - 1)])
        return rows

    def global_keys(self) -> torch.Tensor:
        """Bool ``[Lk]``: keys every query attends in at least one batch."""
        j = torch.arange(self.lk, device=self.device)
        keys = j < self.fields["num_global"]
        if self.global_mask is not None:
            keys = keys | self.global_mask.any(dim=0)
        return keys

    def block_table(self, qb0: int = 0, qb1: int | None = None) -> torch.Tensor | None:
        """Bool ``[heads, qb1 - qb0, nkb]``: the random and listed key blocks of query blocks
        ``[qb0, qb1)`` (all by default); None when neither component is on."""
        if not self.has_blocks:
            return None
        if qb0 == 0 and qb1 is None and self._table is not None:
            return self._table
        f, heads, nkb = self.fields, self.heads, self.nkb
        qb1 = self.nqb if qb1 is None else qb1
        n = qb1 - qb0
        table = torch.zeros(heads, n, nkb + 1, dtype=torch.bool)  # last column: the -1 padding
        if f["num_random"] > 0:
            rb = random_blocks(f["seed"], heads, torch.arange(qb0, qb1), f["num_random"], nkb)
            table.scatter_(2, rb, True)
        bi = self.block_indices
        if bi is not None and bi.shape[2] > 0:
            rows = bi[:, qb0:qb1].expand(heads, n, bi.shape[2])
            rows = torch.where(rows < 0, torch.full_like(rows, nkb), rows)
            table.scatter_(2, rows, True)
        out = table[:, :, :nkb].contiguous().to(self.device)
        if qb0 == 0 and qb1 == self.nqb:
            self._table = out
        return out

    def allowed(
        self,
        i: torch.Tensor,
        j: torch.Tensor,
        h: torch.Tensor | None = None,
        b: torch.Tensor | None = None,
        *,
        table: torch.Tensor | None = None,
        qb0: int = 0,
    ) -> torch.Tensor:
        """``allowed(b, h, i, j)`` on broadcastable int64 tensors; bool of the broadcast shape.

        ``h`` is needed when :attr:`head_dependent`, ``b`` when :attr:`batch` is not None (any
        of ``key_lengths``, ``key_starts``, ``global_mask``).
        ``table`` is a :meth:`block_table` of query blocks from ``qb0`` on (default: all blocks).
        Only elementwise operations and table look-ups: it also serves as a FlexAttention
        ``mask_mod``.
        """
        f = self.fields
        wl, wr, g, s = f["window_left"], f["window_right"], f["num_global"], f["stride"]
        p = i + self.shift
        d = p - j  # how far the key lies before the query
        struct: Any = False
        if self.local_on:
            local: Any = d == d  # every pair (the band may be unbounded on both sides)
            if wl != -1:
                local = local & (d <= wl)
            if wr != -1:
                local = local & (-d <= wr)
            c = f["chunk_size"]
            if c > 0:  # the query's chunk: runs of c positions from the first valid key
                if self.key_starts is not None and b is None:
                    raise ValueError("MaskRule.allowed: chunks with key_starts need the batch b")
                s0: Any = 0 if self.key_starts is None else self.key_starts[b]
                local = local & (
                    torch.div(p - s0, c, rounding_mode="floor")
                    == torch.div(j - s0, c, rounding_mode="floor")
                )
            struct = local
        if g > 0:  # queries at negative positions (Lq > Lk) are never global
            struct = _or(struct, (j < g) | ((p >= 0) & (p < g)))
        gm = self.global_mask
        if gm is not None:  # per batch: key j marked, or query position p(i) marked
            if b is None:
                raise ValueError("MaskRule.allowed: global_mask needs the batch index b")
            inside = (p >= 0) & (p < self.lk)
            query_global = inside & gm[b, p.clamp(0, self.lk - 1)]
            struct = _or(struct, gm[b, j] | query_global)
        if s > 0:  # the sign of p - j does not matter
            struct = _or(struct, torch.remainder(d, s) == 0)
        if self.has_blocks:
            if h is None:
                raise ValueError("MaskRule.allowed: random/listed blocks need the head index h")
            if table is None:
                table = self.block_table()
                qb0 = 0
            assert table is not None
            bs = self.block_size
            struct = _or(struct, table[h, i // bs - qb0, j // bs])
        if struct is False:
            struct = d != d  # no component on: no key (listed layout of only -1 is still "on")
        mask = struct
        if f["causal"]:
            mask = mask & (j <= p)
        if self.key_lengths is not None or self.key_starts is not None:
            if b is None:
                raise ValueError("MaskRule.allowed: key padding needs the batch index b")
            if self.key_lengths is not None:
                mask = mask & (j < self.key_lengths[b])
            if self.key_starts is not None:
                mask = mask & (j >= self.key_starts[b])
        return mask


def allowed_mask(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int,
    key_lengths: Any = None,
    block_indices: Any = None,
    *,
    global_mask: Any = None,
    key_starts: Any = None,
    device: Any = None,
) -> torch.Tensor:
    """The spec's ``allowed(b, h, i, j)`` as a bool tensor ``[B, heads, lq, lk]``.

    ``B`` is the batch of the per-batch inputs (``key_lengths``, ``key_starts``, ``global_mask``),
    or 1 without them. ``block_indices`` defaults to the pattern's own layout (if any).

    Examples
    --------
    >>> from spattn import Pattern
    >>> allowed_mask(Pattern.sliding_window(1), 4, 4, 1)[0, 0].int().tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    """
    rule = MaskRule(
        pattern,
        lq,
        lk,
        heads,
        key_lengths,
        block_indices,
        global_mask=global_mask,
        key_starts=key_starts,
        device=device,
    )
    return rule_mask(rule)


def rule_mask(rule: MaskRule) -> torch.Tensor:
    """A :class:`MaskRule` on the full grid: bool ``[B, heads, Lq, Lk]`` (``B`` = 1 when the
    mask is the same for every batch)."""
    dev = rule.device
    nb = rule.batch
    b = None if nb is None else torch.arange(nb, device=dev).view(-1, 1, 1, 1)
    h = torch.arange(rule.heads, device=dev).view(1, -1, 1, 1)
    i = torch.arange(rule.lq, device=dev).view(1, 1, -1, 1)
    j = torch.arange(rule.lk, device=dev).view(1, 1, 1, -1)
    m = rule.allowed(i, j, h, b)
    return m.expand(1 if nb is None else nb, rule.heads, rule.lq, rule.lk)


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


def apply_softcap(s: torch.Tensor, softcap: float) -> torch.Tensor:
    """``softcap * tanh(s / softcap)`` in the dtype of ``s``: the op's score hook (0: ``s``).

    For float32 on the CPU the tanh is taken in float64 and rounded back: in about one process in
    twenty, torch's float32 tanh there computed part of a tensor (the first half of a
    [2, 8, 1, 300] score tensor) with a relative error of 5e-5 instead of 6e-8 (torch 2.13 on an
    AVX-512 machine), which alone put the oracle outside the float32 tolerance.

    Examples
    --------
    >>> apply_softcap(torch.tensor([0.0, 100.0]), 50.0)
    tensor([ 0.0000, 48.2014])
    """
    if softcap <= 0:
        return s
    x = s / softcap
    if x.dtype == torch.float32 and x.device.type == "cpu":
        return softcap * torch.tanh(x.double()).to(torch.float32)
    return softcap * torch.tanh(x)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    scale: float | None = None,
    *,
    global_mask: Any = None,
    key_starts: Any = None,
    sinks: Any = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense-mask attention, the oracle of every test (float32 as the spec says, or float64).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``[B, Hq, Lq, D]``, ``[B, Hkv, Lk, D]``, ``[B, Hkv, Lk, Dv]``; any float dtype (upcast),
        on any device (the mask is built there).
    pattern : Pattern or dict
        The op attributes (``softcap`` included).
    key_lengths : tensor-like, optional
        ``[B]`` integer: keys ``j >= key_lengths[b]`` are padding.
    block_indices : tensor-like, optional
        ``[Hl, ceil(Lq / block_size), K]`` listed key blocks (defaults to the pattern's layout).
    scale : float, optional
        Overrides the pattern's scale; default ``1/sqrt(D)``.
    global_mask : tensor-like, optional
        ``[B, Lk]`` integer or bool, nonzero = global token (attends and is attended by all).
    key_starts : tensor-like, optional
        ``[B]`` integer: keys ``j < key_starts[b]`` are padding (left padding).
    sinks : tensor-like, optional
        ``[Hq]`` float32: one logit per query head, in the softmax denominator only.
    compute_dtype : torch.dtype
        ``torch.float32`` (the spec's numerics) or ``torch.float64`` (an exact-as-possible value
        for judging a backend's float32 error by itself, as the GPU tests do).

    Returns
    -------
    torch.Tensor
        ``[B, Hq, Lq, Dv]`` in ``compute_dtype``; rows with no allowed key are zeros.

    Examples
    --------
    >>> from spattn import Pattern
    >>> q = torch.randn(1, 2, 8, 16)
    >>> reference_attention(q, q, q, Pattern.sliding_window(2)).shape
    torch.Size([1, 2, 8, 16])
    """
    if compute_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compute_dtype: float32 or float64, got {compute_dtype}")
    _check_qkv(q, k, v)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    rule = MaskRule(
        pattern,
        lq,
        lk,
        hq,
        key_lengths,
        block_indices,
        global_mask=global_mask,
        key_starts=key_starts,
        device=q.device,
    )
    check_batch(rule, b)
    softcap = resolve_softcap(pattern)
    sink = _sinks_input(sinks, hq, q.device)
    mask = rule_mask(rule).expand(b, hq, lq, lk)
    group = hq // hkv
    qf = q.to(compute_dtype)
    kf = k.to(compute_dtype).repeat_interleave(group, dim=1)
    vf = v.to(compute_dtype).repeat_interleave(group, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * resolve_scale(pattern, d, scale)
    s = apply_softcap(s, softcap)
    s = s.masked_fill(~mask, float("-inf"))
    valid = rule.valid_keys()
    if valid is not None:
        # op-spec: padding never contributes, whatever its value rows hold (a zero weight times
        # a NaN would still be NaN)
        vf = vf.masked_fill(~valid.view(b, 1, lk, 1), 0.0)
    # a row whose allowed scores are all -inf weighs nothing, like a row with no allowed key
    any_row = (s != float("-inf")).any(dim=-1, keepdim=True)
    if sink is not None:
        # The sink is one more logit in the softmax whose value row is zero: softmax over
        # [s_i0 .. s_iLk, sink_h], the sink's weight dropped.
        col = sink.to(compute_dtype).view(1, hq, 1, 1).expand(b, hq, lq, 1)
        s = torch.cat([s, col], dim=-1)
    s = torch.where(any_row, s, torch.zeros_like(s))
    w = torch.softmax(s, dim=-1)[..., :lk]
    w = torch.where(any_row, w, torch.zeros_like(w))
    return torch.matmul(w, vf)


def check_batch(rule: MaskRule, batch: int) -> None:
    """The per-batch inputs of ``rule`` must have the query's batch."""
    if rule.batch is not None and rule.batch != batch:
        names = [
            n
            for n, t in (
                ("key_lengths", rule.key_lengths),
                ("key_starts", rule.key_starts),
                ("global_mask", rule.global_mask),
            )
            if t is not None
        ]
        raise ValueError(
            f"SparseAttention: {names[0]}: expected batch B = {batch} (query.shape[0]), "
            f"got {rule.batch}"
        )
