"""The dense-mask oracle: hash test vectors, the mask against a scalar transcription of the
spec / kernels/include/spattn/pattern.h, and the attention numerics."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAMILIES, listed_layout, make_qkv

from spattn import Pattern, reference
from spattn.tolerances import assert_close

# docs/op-spec.md, "Random blocks": (seed, h, qb, r, num_key_blocks) -> block
SPEC_VECTORS = [
    (0, 0, 0, 0, 16, 14),
    (0, 0, 0, 1, 16, 11),
    (0, 1, 0, 0, 16, 11),
    (0, 0, 1, 0, 16, 11),
    (42, 3, 7, 1, 256, 95),
    (2147483647, 15, 1023, 2, 2048, 2000),
    (7, 0, 5, 0, 1, 0),
    (123, 2, 9, 3, 1000, 871),
]


@pytest.mark.parametrize("seed,h,qb,r,nkb,block", SPEC_VECTORS)
def test_random_block_spec_vectors(seed, h, qb, r, nkb, block):
    assert reference.random_block(seed, h, qb, r, nkb) == block
    t = reference.random_blocks(seed, h + 1, torch.tensor([qb]), r + 1, nkb)
    assert int(t[h, 0, r]) == block


def test_mix32_matches_unsigned_arithmetic():
    xs = [0, 1, 0x9E3779B9, 0xFFFFFFFF, 123456789]
    t = reference.mix32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert t == [reference.mix32(x) for x in xs]
    assert all(0 <= v < 2**32 for v in t)


def _allowed_scalar(f, lq, lk, heads, b, h, i, j, key_lengths, bi):
    """Literal transcription of the spec's allowed(b, h, i, j), one pair at a time."""
    bs = f["block_size"]
    nkb = -(-lk // bs)
    ln = lk if key_lengths is None else int(key_lengths[b])
    p = i + lk - lq
    if j >= ln:
        return False
    if f["causal"] and j > p:
        return False
    g, s, nr = f["num_global"], f["stride"], f["num_random"]
    wl, wr = f["window_left"], f["window_right"]
    c = f["chunk_size"]  # no key_starts here: chunks from position 0
    local_on = c > 0 or not (wl == -1 and wr == -1 and (g > 0 or s > 0 or nr > 0 or bi is not None))
    same_chunk = c == 0 or math.floor(p / c) == math.floor(j / c)
    if local_on and (wl == -1 or p - j <= wl) and (wr == -1 or j - p <= wr) and same_chunk:
        return True
    if g > 0 and (j < g or 0 <= p < g):
        return True
    if s > 0 and (p - j) % s == 0:
        return True
    qb, kb = i // bs, j // bs
    for r in range(nr):
        if reference.random_block(f["seed"], h, qb, r, nkb) == kb:
            return True
    if bi is not None:
        row = bi[h if bi.shape[0] == heads else 0, qb].tolist()
        if kb in [x for x in row if x != -1]:
            return True
    return False


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("lq,lk", [(13, 13), (9, 21), (21, 9)])
def test_allowed_mask_matches_scalar_rule(name, lq, lk):
    pattern = FAMILIES[name]
    heads = 3
    kl = torch.tensor([lk, max(0, lk - 5)])
    bi = pattern.layout_at(lq, lk)
    mask = reference.allowed_mask(pattern, lq, lk, heads, kl, bi)
    f = reference.pattern_fields(pattern)
    for b in range(2):
        for h in range(heads):
            for i in range(lq):
                for j in range(lk):
                    want = _allowed_scalar(f, lq, lk, heads, b, h, i, j, kl, bi)
                    assert bool(mask[b, h, i, j]) == want, (b, h, i, j)


@pytest.mark.parametrize("hl", [1, 4])
def test_allowed_mask_listed_blocks_scalar(hl):
    lq, lk, bs, heads = 19, 23, 4, 4
    bi = listed_layout(hl, lq, lk, bs, k=3, seed=hl)
    pattern = Pattern.block_layout(bi, block_size=bs)
    mask = reference.allowed_mask(pattern, lq, lk, heads)
    f = reference.pattern_fields(pattern)
    for h in range(heads):
        for i in range(lq):
            for j in range(lk):
                assert bool(mask[0, h, i, j]) == _allowed_scalar(
                    f, lq, lk, heads, 0, h, i, j, None, bi
                )


def test_local_off_rule():
    # windows -1 with another component: no band; alone: dense.
    assert reference.allowed_mask(Pattern(), 6, 6, 1).all()
    m = reference.allowed_mask(Pattern(num_global=1), 6, 6, 1)[0, 0]
    assert m[0].all() and m[:, 0].all() and not m[1:, 1:].any()
    m = reference.allowed_mask(Pattern(num_global=1, window_left=0, window_right=0), 6, 6, 1)
    assert torch.equal(m[0, 0, 1:, 1:], torch.eye(5, dtype=torch.bool))


def test_no_global_rows_at_negative_positions():
    # Lq > Lk gives negative positions; with num_global = 0 they are not global rows,
    m = reference.allowed_mask(Pattern.sliding_window(1), 6, 3, 1)[0, 0]
    assert m[:2].sum() == 0
    # nor with num_global > 0: only positions 0 ... G-1 are global rows.
    m = reference.allowed_mask(Pattern(num_global=1), 6, 3, 1)[0, 0]
    assert m[:3, 1:].sum() == 0 and m[:, 0].all() and m[3].all()


def _naive(q, k, v, mask, scale):
    out = torch.zeros(q.shape[0], q.shape[1], q.shape[2], v.shape[3], dtype=torch.float64)
    group = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                js = mask[b if mask.shape[0] > 1 else 0, h, i].nonzero().flatten()
                if js.numel() == 0:
                    continue
                s = torch.stack(
                    [scale * (q[b, h, i].double() @ k[b, h // group, j].double()) for j in js]
                )
                w = torch.softmax(s, 0)
                out[b, h, i] = (w[:, None] * v[b, h // group, js].double()).sum(0)
    return out


@pytest.mark.parametrize("hkv", [1, 2, 4])
def test_reference_matches_naive_loop(hkv):
    pattern = FAMILIES["mixed"]
    q, k, v = make_qkv(2, 4, hkv, 11, 17, d=8, dv=5)
    kl = torch.tensor([17, 6])
    mask = reference.allowed_mask(pattern, 11, 17, 4, kl)
    got = reference.reference_attention(q, k, v, pattern, key_lengths=kl)
    assert got.dtype == torch.float32
    assert_close(got, _naive(q, k, v, mask, 0.3), torch.float32)


def test_reference_dense_equals_sdpa_and_scale():
    q, k, v = make_qkv(2, 4, 4, 10, 14)
    for causal in (False, True):
        got = reference.reference_attention(q, k, v, Pattern.dense(causal=causal))
        m = reference.allowed_mask(Pattern.dense(causal=causal), 10, 14, 1)[0, 0]
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
        assert_close(got, want, torch.float32)
    got = reference.reference_attention(q, k, v, Pattern.dense(), scale=0.5)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert_close(got, want, torch.float32)
    assert reference.resolve_scale(Pattern(scale=0.0), 16) == 1 / math.sqrt(16)


def test_empty_rows_are_zero():
    q, k, v = make_qkv(2, 2, 1, 8, 5)
    out = reference.reference_attention(
        q, k, v, Pattern.dense(causal=True), key_lengths=torch.tensor([5, 0])
    )
    assert torch.all(out[:, :, :3] == 0)  # positions -3..-1: no key at or before them
    assert torch.all(out[1] == 0)  # batch 1 has no valid key
    assert torch.isfinite(out).all() and out[0, :, 3:].abs().sum() > 0


def test_softcap_float32_is_the_rounded_exact_value():
    """The oracle's softcap in float32 is the float64 value rounded: torch's own float32 tanh on
    the CPU was seen to compute part of a tensor with a relative error of 5e-5 in some processes,
    which put the oracle itself outside the float32 tolerance."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 8, 64, 300, generator=g) * 4
    for cap in (3.0, 50.0):
        got = reference.apply_softcap(s, cap)
        exact = cap * torch.tanh(s.double() / cap)
        assert got.dtype == torch.float32
        # within the three float32 roundings of the division, the tanh and the product
        assert torch.all((got.double() - exact).abs() <= 4e-7 * exact.abs() + 1e-30)
    assert reference.apply_softcap(s, 0.0) is s
