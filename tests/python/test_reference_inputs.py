"""The op's inputs 5-7 (global_mask, key_starts, sinks) and the softcap attribute in the oracle
(spattn.reference) and the block-sparse path, against a brute-force float64 computation written
here from docs/op-spec.md pair by pair (independent of spattn.reference.MaskRule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import listed_layout, make_qkv

from spattn import reference
from spattn.blocksparse import block_sparse_attention, count_allowed
from spattn.tolerances import assert_close

# The existing components, each alone (block_indices: a listed layout made per shape).
COMPONENTS = {
    "dense": {},
    "causal": {"causal": 1},
    "band": {"window_left": 3, "window_right": 2},
    "causal_band": {"causal": 1, "window_left": 4},
    "num_global": {"window_left": 1, "window_right": 1, "num_global": 2},
    "strided": {"window_left": 2, "causal": 1, "stride": 4},
    "random": {"num_random": 1, "block_size": 4, "seed": 3},
    "listed": {"block_size": 4, "listed": True},
    "key_lengths": {"window_left": 5, "window_right": 5, "key_lengths": True},
}
ADDITIONS = ["global_mask", "key_starts", "sinks", "softcap", "all"]
# (B, Lq, Lk): equal, Lq < Lk, Lq > Lk (negative positions).
SHAPES = [(2, 13, 13), (2, 9, 21), (3, 21, 9)]


def _case(component, addition, b, hq, lq, lk, seed=0):
    """Attributes and inputs of one case: numpy inputs for the brute force and the oracle."""
    attrs = dict(COMPONENTS[component])
    listed = attrs.pop("listed", False)
    with_kl = attrs.pop("key_lengths", False)
    rng = np.random.default_rng(seed)
    inputs = {}
    kl = None
    if with_kl or addition in ("key_starts", "all"):
        kl = rng.integers(lk // 2, lk + 1, size=b).astype(np.int32)
        kl[0] = lk
        inputs["key_lengths"] = kl
    if listed:
        bs = attrs["block_size"]
        inputs["block_indices"] = listed_layout(hq, lq, lk, bs, k=2, seed=seed).numpy()
    if addition in ("global_mask", "all"):
        gm = (rng.random((b, lk)) < 0.15).astype(np.int32)
        gm[0, lk - 1] = 3  # any nonzero value marks a global token
        inputs["global_mask"] = gm
    if addition in ("key_starts", "all"):
        hi = kl if kl is not None else np.full(b, lk)
        ks = np.array([rng.integers(0, h + 1) for h in hi], dtype=np.int32)
        ks[-1] = hi[-1]  # a batch with no valid key at all
        inputs["key_starts"] = ks
    if addition in ("sinks", "all"):
        sinks = rng.standard_normal(hq).astype(np.float32)
        sinks[-1] = -math.inf  # no sink for that head
        inputs["sinks"] = sinks
    if addition in ("softcap", "all"):
        attrs["softcap"] = 1.5
    return attrs, inputs


def _allowed(attrs, inputs, b, h, i, j, lq, lk):
    """docs/op-spec.md "The mask", one pair at a time."""
    wl, wr = attrs.get("window_left", -1), attrs.get("window_right", -1)
    g, s = attrs.get("num_global", 0), attrs.get("stride", 0)
    r, bs, seed = attrs.get("num_random", 0), attrs.get("block_size", 64), attrs.get("seed", 0)
    bi, gm = inputs.get("block_indices"), inputs.get("global_mask")
    kl, ks = inputs.get("key_lengths"), inputs.get("key_starts")
    p = i + lk - lq
    if kl is not None and j >= kl[b]:
        return False
    if ks is not None and j < ks[b]:
        return False
    if attrs.get("causal", 0) and j > p:
        return False
    other = g > 0 or s > 0 or r > 0 or bi is not None or gm is not None
    if not (wl == -1 and wr == -1 and other):
        if (wl == -1 or p - j <= wl) and (wr == -1 or j - p <= wr):
            return True
    if g > 0 and (j < g or 0 <= p < g):
        return True
    if gm is not None and (gm[b, j] != 0 or (0 <= p < lk and gm[b, p] != 0)):
        return True
    if s > 0 and (p - j) % s == 0:
        return True
    nkb = -(-lk // bs)
    if any(reference.random_block(seed, h, i // bs, x, nkb) == j // bs for x in range(r)):
        return True
    if bi is not None:
        row = bi[h if bi.shape[0] > 1 else 0, i // bs]
        if any(e >= 0 and e == j // bs for e in row):
            return True
    return False


def brute_force(q, k, v, attrs, inputs):
    """float64 attention pair by pair; returns (output, allowed mask) as numpy arrays."""
    q, k, v = (x.double().numpy() for x in (q, k, v))
    b_, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    scale = attrs.get("scale") or 1.0 / math.sqrt(d)
    cap = attrs.get("softcap", 0.0)
    sinks = inputs.get("sinks")
    out = np.zeros((b_, hq, lq, v.shape[3]))
    mask = np.zeros((b_, hq, lq, lk), dtype=bool)
    for b in range(b_):
        for h in range(hq):
            kv = h // (hq // hkv)
            for i in range(lq):
                js = [j for j in range(lk) if _allowed(attrs, inputs, b, h, i, j, lq, lk)]
                mask[b, h, i, js] = True
                if not js:
                    continue
                s = scale * (k[b, kv, js] @ q[b, h, i])
                if cap > 0:
                    s = cap * np.tanh(s / cap)
                sink = -math.inf if sinks is None else float(sinks[h])
                m = max(s.max(), sink)
                e = np.exp(s - m)
                den = e.sum() + (0.0 if sink == -math.inf else math.exp(sink - m))
                out[b, h, i] = e @ v[b, kv, js] / den
    return out, mask


def _torch_inputs(inputs):
    return {n: torch.from_numpy(x) for n, x in inputs.items()}


@pytest.mark.parametrize("gqa", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}q{s[1]}k{s[2]}")
@pytest.mark.parametrize("addition", ADDITIONS)
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_oracle_and_blocksparse_match_brute_force(component, addition, shape, gqa):
    b, lq, lk = shape
    hq = 4
    attrs, inputs = _case(component, addition, b, hq, lq, lk, seed=lq * 7 + lk)
    q, k, v = make_qkv(b, hq, hq // gqa, lq, lk, d=8, dv=6, seed=lk)
    want, want_mask = brute_force(q, k, v, attrs, inputs)
    t = _torch_inputs(inputs)
    mask = reference.allowed_mask(
        attrs,
        lq,
        lk,
        hq,
        t.get("key_lengths"),
        t.get("block_indices"),
        global_mask=t.get("global_mask"),
        key_starts=t.get("key_starts"),
    )
    assert torch.equal(mask.expand(b, hq, lq, lk), torch.from_numpy(want_mask))
    kw = {n: t[n] for n in ("global_mask", "key_starts", "sinks") if n in t}
    args = (q, k, v, attrs, t.get("key_lengths"), t.get("block_indices"))
    got = reference.reference_attention(*args, **kw)
    assert_close(got, want, torch.float32, msg="oracle float32")
    got64 = reference.reference_attention(*args, **kw, compute_dtype=torch.float64)
    assert np.abs(got64.numpy() - want).max() < 1e-12
    # Rows with no allowed key are exact zeros, sinks or not.
    assert (got[torch.from_numpy(~want_mask.any(-1))] == 0).all()
    bsp = block_sparse_attention(*args, block_q=5, **kw)
    assert_close(bsp, got, torch.float32, msg="block-sparse")
    pairs = count_allowed(
        attrs,
        lq,
        lk,
        hq,
        t.get("key_lengths"),
        t.get("block_indices"),
        global_mask=t.get("global_mask"),
        key_starts=t.get("key_starts"),
    )
    assert pairs == int(want_mask.sum()) // (1 if mask.shape[0] == b else b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("component", list(COMPONENTS))
def test_every_dtype(component, dtype):
    b, hq, lq, lk = 2, 4, 11, 17
    attrs, inputs = _case(component, "all", b, hq, lq, lk, seed=5)
    q, k, v = make_qkv(b, hq, 2, lq, lk, d=8, dtype=dtype, seed=1)
    want, _ = brute_force(q, k, v, attrs, inputs)  # on the rounded inputs
    t = _torch_inputs(inputs)
    args = (q, k, v, attrs, t.get("key_lengths"), t.get("block_indices"))
    kw = {n: t[n] for n in ("global_mask", "key_starts", "sinks")}
    got = reference.reference_attention(*args, **kw)
    assert got.dtype == torch.float32
    assert_close(got, want, torch.float32, msg=f"oracle on {dtype} inputs")
    bsp = block_sparse_attention(*args, block_q=4, **kw)
    assert bsp.dtype == dtype
    assert_close(bsp, got, dtype, msg="block-sparse")


def test_sinks_of_minus_inf_change_nothing_and_softcap_zero_is_off():
    q, k, v = make_qkv(2, 4, 2, 10, 12)
    pat = {"window_left": 3, "window_right": 3}
    base = reference.reference_attention(q, k, v, pat)
    sinks = torch.full((4,), -math.inf)
    torch.testing.assert_close(reference.reference_attention(q, k, v, pat, sinks=sinks), base)
    torch.testing.assert_close(block_sparse_attention(q, k, v, pat, sinks=sinks), base)
    torch.testing.assert_close(reference.reference_attention(q, k, v, {**pat, "softcap": 0}), base)


def test_sinks_shrink_the_weights():
    # A very large sink takes the whole softmax mass: the output goes to zero.
    q, k, v = make_qkv(1, 2, 2, 6, 6)
    out = reference.reference_attention(q, k, v, {}, sinks=torch.tensor([80.0, 0.0]))
    assert out[:, 0].abs().max() < 1e-20 and out[:, 1].abs().max() > 1e-3


def test_global_mask_present_switches_the_default_band_off():
    # Like block_indices, the presence of global_mask counts as a component: with the default
    # windows and no global token marked, no key is allowed (the rows are zeros).
    q, k, v = make_qkv(2, 2, 2, 5, 5)
    gm = torch.zeros(2, 5, dtype=torch.int32)
    assert not reference.allowed_mask({}, 5, 5, 2, global_mask=gm).any()
    assert (reference.reference_attention(q, k, v, {}, global_mask=gm) == 0).all()
    assert (block_sparse_attention(q, k, v, {}, global_mask=gm) == 0).all()


def test_global_mask_per_batch():
    gm = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.int32)
    m = reference.allowed_mask({"window_left": 0, "window_right": 0}, 6, 6, 1, global_mask=gm)
    assert m[0, 0, :, 1].all() and m[0, 0, 1, :].all() and not m[0, 0, 3, 4]
    assert m[1, 0, :, 4].all() and m[1, 0, 4, :].all() and not m[1, 0, 3, 1]


def _bad(**over):
    q, k, v = make_qkv(2, 4, 2, 6, 8)
    base = {"global_mask": None, "key_starts": None, "sinks": None, "key_lengths": None}
    base.update(over)
    pattern = base.pop("pattern", {"window_left": 2})
    return (q, k, v, pattern, base.pop("key_lengths")), base


BAD = {
    "global_mask float": ({"global_mask": torch.zeros(2, 8)}, "global_mask"),
    "global_mask shape": ({"global_mask": torch.zeros(2, 7, dtype=torch.int32)}, "global_mask"),
    "global_mask batch": ({"global_mask": torch.zeros(3, 8, dtype=torch.int32)}, "global_mask"),
    "key_starts float": ({"key_starts": torch.zeros(2)}, "key_starts"),
    "key_starts shape": ({"key_starts": torch.zeros(2, 1, dtype=torch.int32)}, "key_starts"),
    "key_starts batch": ({"key_starts": torch.zeros(3, dtype=torch.int32)}, "key_starts"),
    "key_starts negative": ({"key_starts": torch.tensor([0, -1], dtype=torch.int32)}, "key_starts"),
    "key_starts > Lk": ({"key_starts": torch.tensor([9, 0], dtype=torch.int32)}, "key_starts"),
    "key_starts > key_lengths": (
        {"key_starts": torch.tensor([0, 5]), "key_lengths": torch.tensor([8, 4])},
        "key_starts",
    ),
    "sinks NaN": ({"sinks": torch.tensor([0.0, math.nan, 0.0, 0.0])}, "sinks"),
    "sinks +inf": ({"sinks": torch.tensor([0.0, 0.0, math.inf, 0.0])}, "sinks"),
    "sinks shape": ({"sinks": torch.zeros(2)}, "sinks"),
    "sinks float16": ({"sinks": torch.zeros(4, dtype=torch.float16)}, "sinks"),
    "sinks int": ({"sinks": torch.zeros(4, dtype=torch.int32)}, "sinks"),
    "softcap negative": ({"pattern": {"softcap": -1.0}}, "softcap"),
    "softcap NaN": ({"pattern": {"softcap": math.nan}}, "softcap"),
    "softcap inf": ({"pattern": {"softcap": math.inf}}, "softcap"),
    "key_lengths float": ({"key_lengths": torch.tensor([8.0, 8.0])}, "key_lengths"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("impl", ["reference", "blocksparse"])
def test_invalid_inputs_name_the_input(impl, case):
    over, name = BAD[case]
    args, kw = _bad(**over)
    fn = reference.reference_attention if impl == "reference" else block_sparse_attention
    with pytest.raises(ValueError, match=rf"SparseAttention: {name}: expected"):
        fn(*args, **kw)


def test_padding_never_contributes_and_all_minus_inf_rows_are_zero():
    """op-spec, "Non-finite values and masked positions": NaN/inf in padding keys' rows changes
    nothing, in the oracle and the block-sparse path; a row whose allowed scores are all -inf is
    zeros."""
    import spattn
    from spattn.reference import reference_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 16, generator=g) for _ in range(3))
    kl = torch.tensor([6], dtype=torch.int32)
    attrs = dict(window_left=2, window_right=2)
    clean = reference_attention(q, k, v, attrs, key_lengths=kl)
    k2, v2 = k.clone(), v.clone()
    v2[0, :, 6] = float("nan")
    k2[0, :, 7] = float("inf")
    dirty = reference_attention(q, k2, v2, attrs, key_lengths=kl)
    assert torch.equal(clean, dirty)
    bs = spattn.sparse_attention(
        q, k2, v2, spattn.Pattern.sliding_window(2), key_lengths=kl, impl="blocksparse"
    )
    assert torch.isfinite(bs).all()
    torch.testing.assert_close(bs, clean, atol=2e-5, rtol=1e-4)
    # query row 0 of head 0 set to -inf against keys with positive first element: all -inf
    q3, k3 = q.clone(), k.clone().abs()
    q3[0, 0, 0] = 0.0
    q3[0, 0, 0, 0] = float("-inf")
    out = reference_attention(q3, k3, v, attrs)
    assert torch.equal(out[0, 0, 0], torch.zeros(16))
