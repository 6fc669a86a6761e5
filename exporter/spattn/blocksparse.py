"""Memory-efficient PyTorch path of ``spattn::SparseAttention``.

For each chunk of queries only the candidate keys are gathered: the local band, the global keys,
the random and listed blocks (shared by the chunk), plus per-row strided keys. The exact token mask
of docs/op-spec.md is evaluated on that small slice and an online softmax in float32 combines the
pieces, so memory grows with ``L * (window + blocks)``, never with ``L * L``. Query rows that are
global in some batch (position in ``[0, num_global)`` or marked in ``global_mask``) attend to every
key and are processed in key chunks; keys marked global in any batch join every chunk's candidates.
Sinks start each row's online softmax; the softcap applies to each piece's scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import reference

__all__ = ["block_sparse_attention", "count_allowed", "block_any_mask"]

# Scores per piece (elements); bounds the working memory of one step (~16 MiB of float32).
_SCORE_BUDGET = 1 << 22


@dataclass
class _Ctx:
    rule: reference.MaskRule  # the mask (spattn.reference), evaluated on candidate slices only
    max_len: int  # one past the last key any batch attends
    min_key: int  # the first key any batch attends (min key_starts)
    global_rows: torch.Tensor  # bool [Lq]: rows that attend every key in some batch
    global_keys: torch.Tensor  # bool [Lk]: keys that every query attends in some batch

    @property
    def f(self) -> dict[str, int]:
        return self.rule.fields

    @property
    def shift(self) -> int:
        return self.rule.shift


def _make_ctx(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int,
    key_lengths: Any,
    block_indices: Any,
    global_mask: Any = None,
    key_starts: Any = None,
) -> _Ctx:
    rule = reference.MaskRule(
        pattern,
        lq,
        lk,
        heads,
        key_lengths,
        block_indices,
        global_mask=global_mask,
        key_starts=key_starts,
    )
    ks = rule.key_starts
    min_key = 0 if ks is None or ks.numel() == 0 else int(ks.min())
    return _Ctx(rule, rule.max_key(), min_key, rule.global_rows(), rule.global_keys())


def _slice_mask(
    ctx: _Ctx, i: torch.Tensor, j: torch.Tensor, table: torch.Tensor | None, qb0: int
) -> torch.Tensor:
    """Exact mask on a slice: ``i [nq]``, ``j [n]`` or ``[nq, n]`` -> bool ``[B|1, H|1, nq, n]``."""
    rule = ctx.rule
    ii = i.view(1, 1, -1, 1)
    jj = j.view(1, 1, 1, -1) if j.dim() == 1 else j.view(1, 1, *j.shape)
    h = torch.arange(rule.heads).view(1, -1, 1, 1) if rule.head_dependent else None
    b = None if rule.batch is None else torch.arange(rule.batch).view(-1, 1, 1, 1)
    m = rule.allowed(ii, jj, h, b, table=table, qb0=qb0)
    return m.expand(m.shape[0], m.shape[1], i.numel(), jj.shape[-1])


@dataclass
class _Chunk:
    rows: torch.Tensor  # query rows (int64 [nq], sorted, within one span of query blocks)
    keys: torch.Tensor  # sorted candidate keys shared by the rows (int64 [n])
    member: torch.Tensor | None  # bool [lk]: is a key among `keys` (for the strided dedupe)
    strided_hi: int  # strided keys j <= strided_hi are gathered per row (-1: none)
    table: torch.Tensor | None
    qb0: int


def _chunks(ctx: _Ctx, block_q: int) -> Iterator[_Chunk]:
    """The query chunks and their candidate keys (see the module docstring). The rows of a span
    that attend every key in some batch (global rows) form a chunk of their own whose candidates
    are all keys; the exact mask then gives each batch its own answer."""
    f = ctx.f
    bs, lq, lk = f["block_size"], ctx.rule.lq, ctx.rule.lk
    blocks_on = ctx.rule.has_blocks
    cq = max(1, block_q)
    bounds = set(range(0, lq, cq)) | {0, lq}
    if blocks_on:
        if bs <= cq:
            cq = (cq // bs) * bs
            bounds = set(range(0, lq, cq)) | {0, lq}
        else:
            bounds |= set(range(0, lq, bs))
    edges = sorted(b for b in bounds if 0 <= b <= lq)
    lo_key = ctx.min_key
    ks = ctx.rule.key_starts  # the chunks' origins, one per batch
    starts = [0] if ks is None or ks.numel() == 0 else ks.tolist()
    for i0, i1 in zip(edges[:-1], edges[1:], strict=False):
        p0, p1 = i0 + ctx.shift, i1 - 1 + ctx.shift
        hi = min(lk, ctx.max_len) - 1
        if f["causal"]:
            hi = min(hi, p1)
        qb0, qb1 = i0 // bs, (i1 - 1) // bs
        table = ctx.rule.block_table(qb0, qb1 + 1) if blocks_on else None
        rows = torch.arange(i0, i1)
        if hi < lo_key:
            yield _Chunk(rows, torch.zeros(0, dtype=torch.int64), None, -1, table, qb0)
            continue
        glob = ctx.global_rows[i0:i1]
        if bool(glob.any()):  # every key is a candidate
            yield _Chunk(rows[glob], torch.arange(lo_key, hi + 1), None, -1, table, qb0)
            rows = rows[~glob]
            if rows.numel() == 0:
                continue
        member = torch.zeros(lk, dtype=torch.bool)
        if ctx.rule.local_on:
            lo = 0 if f["window_left"] == -1 else max(p0 - f["window_left"], 0)
            up = hi if f["window_right"] == -1 else min(p1 + f["window_right"], hi)
            c = f["chunk_size"]
            if c > 0:  # from the first row's chunk to the last row's, over every batch's origin
                lo = max(lo, min(s0 + (p0 - s0) // c * c for s0 in starts))
                up = min(up, max(s0 + (p1 - s0) // c * c for s0 in starts) + c - 1)
            if lo <= up:
                member[lo : up + 1] = True
        member |= ctx.global_keys
        if table is not None:
            kb_any = table.any(dim=1).any(dim=0)  # [nkb]
            member |= kb_any.repeat_interleave(bs)[:lk]
        member[hi + 1 :] = False
        member[:lo_key] = False
        keys = member.nonzero().squeeze(1)
        strided_hi = hi if f["stride"] > 0 else -1
        yield _Chunk(rows, keys, member, strided_hi, table, qb0)


def _member(ch: _Chunk) -> torch.Tensor:
    """The chunk's candidate set; chunks with per-row strided keys always carry one."""
    if ch.member is None:
        raise AssertionError("strided keys of a chunk without a candidate set")
    return ch.member


def _strided_keys(
    ctx: _Ctx, i: torch.Tensor, m0: int, m1: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row strided keys ``j = (p mod S) + m S`` for ``m in [m0, m1)``; (keys, in range)."""
    s = ctx.f["stride"]
    r = torch.remainder(i + ctx.shift, s).view(-1, 1)
    j = r + s * torch.arange(m0, m1).view(1, -1)
    ok = j <= hi
    return torch.where(ok, j, torch.zeros_like(j)), ok


class _Online:
    """Online softmax state of one query chunk, float32. A sink starts each row as one logit
    already seen with a zero value row (``m = sink``, ``den = e^0``; -inf: no sink)."""

    def __init__(
        self, b: int, hkv: int, g: int, nq: int, dv: int, sink: torch.Tensor | None = None
    ) -> None:
        if sink is None:
            self.m = torch.full((b, hkv, g, nq), float("-inf"))
            self.den = torch.zeros(b, hkv, g, nq)
        else:
            m = sink.to(torch.float32).view(1, hkv, g, 1).expand(b, hkv, g, nq)
            self.m = m.clone()
            self.den = torch.where(torch.isinf(m), torch.zeros_like(m), torch.ones_like(m))
        self.acc = torch.zeros(b, hkv, g, nq, dv)

    def update(self, s: torch.Tensor, mask: torch.Tensor, pv: Any) -> None:
        s = s.masked_fill(~mask, float("-inf"))
        m_new = torch.maximum(self.m, s.amax(dim=-1))
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - m_safe.unsqueeze(-1))
        alpha = torch.exp(self.m - m_safe)
        self.den = self.den * alpha + p.sum(dim=-1)
        self.acc = self.acc * alpha.unsqueeze(-1) + pv(p)
        self.m = m_new

    def result(self) -> torch.Tensor:
        den = self.den.unsqueeze(-1)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        return torch.where(den > 0, self.acc / safe, torch.zeros_like(self.acc))


def _gqa_mask(mask: torch.Tensor, hkv: int) -> torch.Tensor:
    """``[B|1, Hq|1, nq, n]`` -> ``[B|1, Hkv|1, g|1, nq, n]``."""
    bm, hm = mask.shape[0], mask.shape[1]
    if hm == 1:
        return mask.unsqueeze(1)
    return mask.view(bm, hkv, hm // hkv, *mask.shape[2:])


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    scale: float | None = None,
    block_q: int = 128,
    *,
    global_mask: Any = None,
    key_starts: Any = None,
    sinks: Any = None,
) -> torch.Tensor:
    """Sparse attention with memory ``O(L * window)``: never allocates ``Lq x Lk``.

    Same contract as :func:`~.reference.reference_attention`, but returns ``q.dtype`` (float32
    accumulation, rounded once).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``[B, Hq, Lq, D]``, ``[B, Hkv, Lk, D]``, ``[B, Hkv, Lk, Dv]``.
    pattern : Pattern or dict
        The op attributes (``softcap`` included).
    key_lengths, block_indices : tensor-like, optional
        As in the op (``block_indices`` defaults to the pattern's layout).
    scale : float, optional
        Overrides the pattern's scale.
    block_q : int
        Query rows per chunk.
    global_mask, key_starts, sinks : tensor-like, optional
        The op's inputs 5-7 (``[B, Lk]``, ``[B]``, ``[Hq]`` float32), as in the reference.

    Returns
    -------
    torch.Tensor
        ``[B, Hq, Lq, Dv]`` in ``q.dtype``.

    Examples
    --------
    >>> from spattn import Pattern
    >>> q = torch.randn(1, 2, 1000, 32)
    >>> block_sparse_attention(q, q, q, Pattern.longformer(64, 2)).shape
    torch.Size([1, 2, 1000, 32])
    """
    reference._check_qkv(q, k, v)
    b, hq, lq, d = q.shape
    hkv, lk, dv = k.shape[1], k.shape[2], v.shape[3]
    g = hq // hkv
    ctx = _make_ctx(pattern, lq, lk, hq, key_lengths, block_indices, global_mask, key_starts)
    reference.check_batch(ctx.rule, b)
    sc = reference.resolve_scale(pattern, d, scale)
    softcap = reference.resolve_softcap(pattern)
    sink = reference._sinks_input(sinks, hq, "cpu")
    out = torch.empty(b, hq, lq, dv, dtype=q.dtype, device=q.device)

    def scores(s: torch.Tensor) -> torch.Tensor:
        return reference.apply_softcap(s, softcap)

    with torch.no_grad():
        kf = k.detach().to(torch.float32)
        vf = v.detach().to(torch.float32)
        for ch in _chunks(ctx, block_q):
            i = ch.rows
            nq = i.numel()
            qc = q.detach().index_select(2, i.to(q.device)).to(torch.float32) * sc
            qc = qc.view(b, hkv, g, nq, d)
            st = _Online(b, hkv, g, nq, dv, sink)
            step = max(16, _SCORE_BUDGET // max(1, b * hq * nq))
            n = ch.keys.numel()
            for a in range(0, n, step):
                idx = ch.keys[a : a + step]
                kk = kf.index_select(2, idx)
                vv = vf.index_select(2, idx)
                s = scores(torch.einsum("bhgqd,bhnd->bhgqn", qc, kk))
                mask = _gqa_mask(_slice_mask(ctx, i, idx, ch.table, ch.qb0), hkv)
                st.update(s, mask, lambda p, vv=vv: torch.einsum("bhgqn,bhnd->bhgqd", p, vv))
            if ch.strided_hi >= 0:
                s_ = ctx.f["stride"]
                m_total = ch.strided_hi // s_ + 1
                mstep = max(1, _SCORE_BUDGET // max(1, b * hq * nq) // 2)
                for m0 in range(0, m_total, mstep):
                    j, ok = _strided_keys(ctx, i, m0, min(m0 + mstep, m_total), ch.strided_hi)
                    ok = ok & ~_member(ch)[j]
                    kk = kf[:, :, j]  # [B, Hkv, nq, m, D]
                    vv = vf[:, :, j]
                    s = scores(torch.einsum("bhgqd,bhqmd->bhgqm", qc, kk))
                    mask = _slice_mask(ctx, i, j, ch.table, ch.qb0) & ok
                    mask = _gqa_mask(mask, hkv)
                    st.update(s, mask, lambda p, vv=vv: torch.einsum("bhgqm,bhqmd->bhgqd", p, vv))
            res = st.result().view(b, hq, nq, dv).to(q.dtype)
            out.index_copy_(2, i.to(out.device), res.to(out.device))
    return out


def _iter_masks(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int,
    key_lengths: Any = None,
    block_indices: Any = None,
    global_mask: Any = None,
    key_starts: Any = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(i, j, mask)`` slices (``j [n]`` or ``[nq, n]``; mask ``[B|1, H|1, nq, n]``)
    that cover every allowed pair exactly once."""
    ctx = _make_ctx(pattern, lq, lk, heads, key_lengths, block_indices, global_mask, key_starts)
    for ch in _chunks(ctx, 128):
        i = ch.rows
        step = max(16, _SCORE_BUDGET // max(1, heads * i.numel()))
        for a in range(0, ch.keys.numel(), step):
            idx = ch.keys[a : a + step]
            yield i, idx, _slice_mask(ctx, i, idx, ch.table, ch.qb0)
        if ch.strided_hi >= 0:
            m_total = ch.strided_hi // ctx.f["stride"] + 1
            j, ok = _strided_keys(ctx, i, 0, m_total, ch.strided_hi)
            ok = ok & ~_member(ch)[j]
            yield i, j, _slice_mask(ctx, i, j, ch.table, ch.qb0) & ok


def count_allowed(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int = 1,
    key_lengths: Any = None,
    block_indices: Any = None,
    *,
    global_mask: Any = None,
    key_starts: Any = None,
) -> int:
    """Number of allowed ``(b, h, i, j)`` pairs, without an ``lq x lk`` allocation.

    Examples
    --------
    >>> from spattn import Pattern
    >>> count_allowed(Pattern.sliding_window(1), 4, 4)
    10
    """
    total = 0
    for _, _, mask in _iter_masks(
        pattern, lq, lk, heads, key_lengths, block_indices, global_mask, key_starts
    ):
        mask = mask.expand(mask.shape[0], heads, *mask.shape[2:])
        total += int(mask.sum())
    return total


def block_any_mask(
    pattern: Any,
    lq: int,
    lk: int,
    heads: int,
    block_size: int,
    *,
    key_lengths: Any = None,
    global_mask: Any = None,
) -> torch.Tensor:
    """Bool ``[heads, ceil(lq/bs), ceil(lk/bs)]``: blocks holding at least one allowed pair
    (in any batch of the per-batch inputs ``key_lengths`` and ``global_mask``).

    Examples
    --------
    >>> from spattn import Pattern
    >>> block_any_mask(Pattern.dense(causal=True), 4, 4, 1, 2)[0].int().tolist()
    [[1, 0], [1, 1]]
    """
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    out = torch.zeros(heads, nqb, nkb, dtype=torch.bool)
    for i, j, mask in _iter_masks(pattern, lq, lk, heads, key_lengths, None, global_mask):
        m = mask.any(dim=0).expand(heads, i.numel(), mask.shape[-1])  # [H, nq, n]
        jj = (j.view(1, -1) if j.dim() == 1 else j).expand(i.numel(), -1)
        h_idx, r_idx, c_idx = m.nonzero(as_tuple=True)
        out[h_idx, i[r_idx] // block_size, jj[r_idx, c_idx] // block_size] = True
    return out


def _band_rows(f: dict[str, int], lk: int, p: np.ndarray) -> np.ndarray:
    """Allowed keys of the query rows at positions ``p`` (band, causal, num_global only)."""
    wl, wr, g_attr, causal = f["window_left"], f["window_right"], f["num_global"], f["causal"]
    local_on = not (wl == -1 and wr == -1 and g_attr > 0)
    hi = np.minimum(p, lk - 1) if causal else np.full_like(p, lk - 1)
    n_all = np.maximum(hi + 1, 0)  # keys 0 ... hi
    g = np.minimum(g_attr, n_all)  # global keys 0 ... g-1
    if local_on:
        lo_b = np.zeros_like(p) if wl == -1 else np.maximum(p - wl, 0)
        hi_b = hi if wr == -1 else np.minimum(hi, p + wr)
        len_b = np.maximum(hi_b - lo_b + 1, 0)
        overlap = np.where(len_b > 0, np.maximum(np.minimum(hi_b, g - 1) - lo_b + 1, 0), 0)
        row = len_b + g - overlap
    else:
        row = g
    return np.where((p >= 0) & (p < g_attr), n_all, row)


def count_allowed_bands(pattern: Any, lq: int, lk: int) -> int | None:
    """Allowed pairs of one head for patterns made of the band, causal and ``num_global`` only
    (no stride, random or listed blocks; no padding); None for other patterns.

    A row's count is piecewise linear in its position ``p`` with kinks only where a clamp of
    the rule switches (``p`` near ``0``, ``G``, ``window_left``, ``Lk - 1 - window_right``, ...):
    summed segment by segment in closed form, so any length up to 2^30 takes milliseconds.
    Segments are checked for linearity and split when in doubt; short ones are summed row by row.

    Examples
    --------
    >>> from spattn import Pattern
    >>> count_allowed_bands(Pattern.sliding_window(1), 4, 4)
    10
    """
    f = reference.pattern_fields(pattern)
    if (
        f["stride"] > 0
        or f["num_random"] > 0
        or f["chunk_size"] > 0
        or getattr(pattern, "block_indices", None) is not None
    ):
        return None
    p0, p1 = lk - lq, lk - 1  # positions of the first and the last query
    wl, wr, g = f["window_left"], f["window_right"], f["num_global"]
    marks = {0, g, wl, lk - 1 - wr, -wr - 1, g - 1 - wr, g + wl, lk - 1}
    cuts = sorted({m + d for m in marks for d in range(-2, 3) if p0 < m + d <= p1} | {p0, p1 + 1})

    def seg_sum(a: int, b: int) -> int:  # rows at positions a ... b-1
        n = b - a
        if n <= 4096:
            return int(_band_rows(f, lk, np.arange(a, b, dtype=np.int64)).sum())
        probe = np.array([a, a + 1, a + n // 3, a + n // 2, b - 2, b - 1], dtype=np.int64)
        v = _band_rows(f, lk, probe)
        slope = v[1] - v[0]
        if all(v[k] == v[0] + slope * (probe[k] - a) for k in range(len(probe))):
            return int(n * v[0] + slope * n * (n - 1) // 2)
        m = a + n // 2
        return seg_sum(a, m) + seg_sum(m, b)

    return sum(seg_sum(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
