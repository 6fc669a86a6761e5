"""The shared CPU kernel through the direct C API (no ONNX Runtime), against the float32 oracle.

Each SIMD variant of the micro-kernels (AVX-512, AVX2, generic) is exercised: the variant is chosen
once per process, so the non-default ones run in a subprocess with SPATTN_CPU_ISA set.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from spattn import capi
from spattn.reference import reference_attention
from spattn.tolerances import assert_close

PATTERNS = {
    "dense": {},
    "causal": {"causal": 1},
    "sliding": {"window_left": 17, "window_right": 9},
    "causal_sliding": {"window_left": 31, "causal": 1},
    "longformer": {"window_left": 20, "window_right": 20, "num_global": 5},
    "bigbird": {
        "window_left": 16,
        "window_right": 16,
        "num_global": 16,
        "num_random": 2,
        "block_size": 16,
        "seed": 3,
    },
    "strided": {"window_left": 7, "causal": 1, "stride": 8},
    "random_only": {"num_random": 3, "block_size": 32, "seed": 11},
}
SHAPES = [  # B, Hq, Hkv, Lq, Lk, D, Dv
    (2, 4, 2, 150, 150, 32, 32),
    (1, 4, 1, 70, 190, 64, 48),  # Lq < Lk (bottom-right), MQA, Dv != D
    (2, 2, 2, 130, 100, 16, 16),  # Lq > Lk: negative positions
]


def _inputs(shape, dtype, seed=0):
    b, hq, hkv, lq, lk, d, dv = shape
    g = np.random.default_rng(seed)
    q = g.standard_normal((b, hq, lq, d)).astype(dtype)
    k = g.standard_normal((b, hkv, lk, d)).astype(dtype)
    v = g.standard_normal((b, hkv, lk, dv)).astype(dtype)
    return q, k, v


def _ref(q, k, v, attrs, key_lengths=None, block_indices=None):
    t = [torch.from_numpy(x.astype(np.float32)) for x in (q, k, v)]
    kl = None if key_lengths is None else torch.from_numpy(key_lengths)
    bi = None if block_indices is None else torch.from_numpy(block_indices)
    return reference_attention(*t, dict(attrs), key_lengths=kl, block_indices=bi).numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_families(shape, name, dtype):
    q, k, v = _inputs(shape, dtype)
    kl = np.array([shape[4], max(0, shape[4] // 2 - 3)][: shape[0]], dtype=np.int32)
    got = capi.cpu_forward(q, k, v, key_lengths=kl, num_threads=2, **PATTERNS[name])
    assert got.dtype == dtype
    assert_close(got, _ref(q, k, v, PATTERNS[name], kl), dtype)


@pytest.mark.parametrize("hl", ["shared", "per_head"])
def test_block_indices(hl):
    shape = (2, 4, 2, 100, 130, 32, 32)
    q, k, v = _inputs(shape, np.float32, seed=1)
    bs = 16
    nqb, nkb = -(-100 // bs), -(-130 // bs)
    g = np.random.default_rng(2)
    bi = g.integers(-1, nkb, size=(1 if hl == "shared" else 4, nqb, 3)).astype(np.int32)
    for attrs in ({"block_size": bs}, {"block_size": bs, "window_left": 2, "window_right": 2}):
        got = capi.cpu_forward(q, k, v, block_indices=bi, **attrs)
        assert_close(got, _ref(q, k, v, attrs, block_indices=bi), np.float32)


def test_empty_rows_are_zero():
    q, k, v = _inputs((2, 2, 2, 40, 40, 16, 16), np.float32)
    kl = np.array([0, 40], dtype=np.int32)  # batch 0: every key is padding
    got = capi.cpu_forward(q, k, v, key_lengths=kl, window_left=0, window_right=0, causal=1)
    assert np.all(got[0] == 0)
    assert np.isfinite(got).all()
    # Lq > Lk with a causal mask: the first Lq - Lk queries see no key.
    q2, k2, v2 = _inputs((1, 1, 1, 50, 30, 16, 16), np.float32)
    got2 = capi.cpu_forward(q2, k2, v2, causal=1)
    assert np.all(got2[0, 0, :20] == 0) and np.abs(got2[0, 0, 20:]).sum() > 0


def test_long_sequence_rows():
    """L = 8192, sliding window + global tokens: sampled rows against a direct float64 softmax."""
    L, d, w, g = 8192, 32, 64, 8
    q, k, v = _inputs((1, 1, 1, L, L, d, d), np.float32, seed=5)
    got = capi.cpu_forward(q, k, v, window_left=w, window_right=w, num_global=g)
    j = np.arange(L)
    for r in (0, 7, 8, 9, 100, 4095, 8000, 8191):
        allowed = (np.abs(r - j) <= w) | (j < g) | (r < g)
        s = (q[0, 0, r].astype(np.float64) @ k[0, 0].T.astype(np.float64)) / np.sqrt(d)
        s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max())
        assert_close(got[0, 0, r], (p / p.sum()) @ v[0, 0].astype(np.float64), np.float32)


ISA_SCRIPT = """
import numpy as np, torch, sys
from spattn import capi
from spattn.reference import reference_attention
from spattn.tolerances import assert_close
g = np.random.default_rng(0)
q = g.standard_normal((1, 3, 97, 48)).astype(np.float32)
k = g.standard_normal((1, 3, 111, 48)).astype(np.float32)
v = g.standard_normal((1, 3, 111, 40)).astype(np.float32)
attrs = {"window_left": 9, "window_right": 3, "num_global": 2, "num_random": 1, "block_size": 8}
got = capi.cpu_forward(q, k, v, **attrs)
ref = reference_attention(*(torch.from_numpy(x) for x in (q, k, v)), attrs).numpy()
assert_close(got, ref, np.float32)
# softcap's tanh goes through the exponential: a NaN score stays NaN through it (the row is NaN),
# and the other rows are the oracle's.
q[0, 1, 40, 5] = np.nan
capped = dict(attrs, softcap=5.0)
got = capi.cpu_forward(q, k, v, **capped)
assert np.isnan(got[0, 1, 40]).all(), got[0, 1, 40]
ref = reference_attention(*(torch.from_numpy(x) for x in (q, k, v)), capped).numpy()
keep = np.ones(got.shape[:3], bool)
keep[0, 1, 40] = False
assert_close(got[keep], ref[keep], np.float32)
# Scores that overflow (op spec, "Non-finite values and masked positions"): query row 0 is 1e20
# everywhere, so a key row of -1e20 scores -inf, one of 1e20 +inf. Two key tiles (64 + 36 keys).
q = g.standard_normal((1, 1, 5, 48)).astype(np.float32)
q[0, 0, 0] = 1e20
def row0(fill, edit=None):
    k = np.full((1, 1, 100, 48), fill, np.float32)
    if edit:
        edit(k)
    return capi.cpu_forward(q, k, g.standard_normal((1, 1, 100, 40)).astype(np.float32))[0, 0]
# only -inf scores: zeros
assert (row0(-1e20)[0] == 0).all()
# a NaN score among -inf ones, in the first tile (the running max is still -inf): NaN
assert np.isnan(row0(-1e20, lambda k: k[0, 0, 5].__setitem__(0, np.nan))[0]).all()
# the same in the second tile, after a tile of -inf scores
assert np.isnan(row0(-1e20, lambda k: k[0, 0, 90].__setitem__(0, np.nan))[0]).all()
# a NaN in the first tile, finite scores in the second: NaN for good
def nan_then_finite(k):
    k[0, 0, 5, 0] = np.nan
    k[0, 0, 64:] = g.standard_normal((36, 48)) * 1e-21
assert np.isnan(row0(-1e20, nan_then_finite)[0]).all()
# a +inf score after finite ones: NaN
def finite_then_inf(k):
    k[0, 0, :64] = g.standard_normal((64, 48)) * 1e-21
    k[0, 0, 70] = 1e20
assert np.isnan(row0(-1e20, finite_then_inf)[0]).all()
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_variants(isa):
    env = dict(os.environ, SPATTN_CPU_ISA=isa)
    out = subprocess.run(
        [sys.executable, "-c", ISA_SCRIPT], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"causal": 2}, "causal"),
        ({"window_left": -2}, "window_left"),
        ({"block_size": 0}, "block_size"),
        ({"num_random": -1}, "num_random"),
        ({"seed": -5}, "seed"),
        ({"scale": float("nan")}, "scale"),
    ],
)
def test_bad_attributes(kwargs, match):
    q, k, v = _inputs((1, 2, 2, 16, 16, 8, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        capi.cpu_forward(q, k, v, **kwargs)


def test_bad_values():
    q, k, v = _inputs((2, 2, 2, 16, 16, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"key_lengths.*key_lengths\[1\] = 17"):
        capi.cpu_forward(q, k, v, key_lengths=np.array([3, 17], np.int32))
    with pytest.raises(ValueError, match=r"key_lengths.*= -1"):
        capi.cpu_forward(q, k, v, key_lengths=np.array([-1, 3], np.int32))
    bi = np.full((1, 1, 2), 5, np.int32)  # block_size 16: one key block, index 5 out of range
    with pytest.raises(ValueError, match="block_indices"):
        capi.cpu_forward(q, k, v, block_indices=bi, block_size=16)


# ---- few query rows: stacked GQA heads, keys and values read in place ----
# Decode steps and short chunks take other paths through the kernel than the shapes above: the
# query heads of a GQA group are stacked into one work item (when the pattern is the same for all
# of them), and float32 keys and values are read in place instead of converted (few rows per
# item, value rows a multiple of the vector width). These shapes reach each combination.

DECODE_PATTERNS = {
    "dense": {},
    "causal_window": {"causal": 1, "window_left": 37},
    "longformer": {"window_left": 20, "window_right": 20, "num_global": 5},
    "strided": {"window_left": 7, "causal": 1, "stride": 8},
    "softcap_window": {"causal": 1, "window_left": 70, "softcap": 3.0},
    "random": {"window_left": 9, "causal": 1, "num_random": 2, "block_size": 16, "seed": 4},
}
DECODE_SHAPES = [  # B, Hq, Hkv, Lq, Lk, D, Dv
    (2, 8, 2, 1, 300, 64, 64),  # decode, GQA 4: stacked, read in place
    (1, 8, 1, 1, 257, 128, 128),  # MQA decode, a partial last key tile
    (3, 12, 3, 2, 200, 128, 128),  # two new tokens: still read in place
    (1, 6, 2, 5, 150, 48, 40),  # Dv not a multiple of the vector width: converted
    (2, 4, 2, 20, 180, 16, 16),  # a short chunk: stacked, converted
    (1, 4, 4, 3, 130, 32, 32),  # no GQA: read in place, one head per item
]


def _decode_extras(shape, seed):
    b, hq, _, _, lk, _, _ = shape
    g = np.random.default_rng(seed)
    return {
        "key_lengths": g.integers(lk // 2, lk + 1, b).astype(np.int32),
        "key_starts": g.integers(0, 9, b).astype(np.int32),
        "sinks": g.standard_normal(hq).astype(np.float32),
    }


@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(DECODE_PATTERNS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_few_query_rows(shape, name, dtype):
    attrs = DECODE_PATTERNS[name]
    q, k, v = _inputs(shape, dtype, seed=3)
    extras = _decode_extras(shape, seed=4)
    got = capi.cpu_forward(q, k, v, num_threads=2, **extras, **attrs)
    t = [torch.from_numpy(x.astype(np.float32)) for x in (q, k, v)]
    ref = reference_attention(
        *t, dict(attrs), **{n: torch.from_numpy(x) for n, x in extras.items()}
    ).numpy()
    assert_close(got, ref, dtype)


def test_few_query_rows_with_global_mask_and_listed_blocks():
    shape = (2, 8, 2, 2, 160, 64, 64)
    q, k, v = _inputs(shape, np.float32, seed=6)
    g = np.random.default_rng(7)
    gm = (g.random((2, 160)) < 0.05).astype(np.int32)
    bi = g.integers(-1, 10, size=(1, 1, 3)).astype(np.int32)  # shared by all heads: stacked
    attrs = {"window_left": 11, "causal": 1, "block_size": 16}
    got = capi.cpu_forward(q, k, v, global_mask=gm, block_indices=bi, **attrs)
    t = [torch.from_numpy(x) for x in (q, k, v)]
    ref = reference_attention(
        *t, attrs, block_indices=torch.from_numpy(bi), global_mask=torch.from_numpy(gm)
    ).numpy()
    assert_close(got, ref, np.float32)


def test_stacking_changes_no_bit():
    """The heads stacked per work item depend on the batch (enough items for the machine's
    threads), the result must not: batch entry 0 alone equals batch entry 0 of a batch of 16."""
    q, k, v = _inputs((16, 8, 1, 1, 600, 128, 128), np.float32, seed=8)
    attrs = {"causal": 1, "window_left": 199}
    many = capi.cpu_forward(q, k, v, num_threads=2, **attrs)
    one = capi.cpu_forward(q[:1], k[:1], v[:1], num_threads=2, **attrs)
    np.testing.assert_array_equal(one[0], many[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_few_query_rows_excluded_keys_never_contribute(bad):
    """Keys outside the window (in a visited key tile and beyond it) and padding keys hold
    non-finite keys and values: the decode rows, which exclude them, stay finite and exact."""
    shape = (2, 8, 2, 1, 300, 64, 64)
    q, k, v = _inputs(shape, np.float32, seed=9)
    attrs = {"causal": 1, "window_left": 40}  # keys 259..299 of the last query
    kl = np.array([300, 280], np.int32)
    k2, v2 = k.copy(), v.copy()
    for x in (k2, v2):
        x[:, :, 250:259] = bad  # in the first visited key tile (256..299), excluded
        x[:, :, 10:20] = bad  # far outside the window
        x[1, :, 280:] = bad  # padding of batch 1
    got = capi.cpu_forward(q, k2, v2, key_lengths=kl, **attrs)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, capi.cpu_forward(q, k, v, key_lengths=kl, **attrs))


def test_few_query_rows_nonfinite_value_of_allowed_key():
    """An infinite value element of an allowed key reaches that output element of every row that
    allows the key, and only that element (op spec, "Non-finite values and masked positions")."""
    shape = (1, 8, 2, 1, 200, 64, 64)
    q, k, v = _inputs(shape, np.float32, seed=10)
    v2 = v.copy()
    v2[0, 1, 190, 5] = np.inf  # kv head 1: query heads 4..7
    got = capi.cpu_forward(q, k, v2, causal=1, window_left=31)
    clean = capi.cpu_forward(q, k, v, causal=1, window_left=31)
    assert np.isinf(got[0, 4:, 0, 5]).all()
    keep = np.ones(got.shape, bool)
    keep[0, 4:, 0, 5] = False
    np.testing.assert_array_equal(got[keep], clean[keep])


def test_tile_cache_across_calls():
    """One thread's key/value tile cache serves calls of different head dims and dtypes one after
    another (its slot count and value tiles depend on both): the global query rows walk every key
    tile of a 4K row before the band's rows reuse the first ones, the last rows of a short query
    see key tiles 0 and 64, which share a slot, and every result matches the oracle."""
    attrs = {"window_left": 100, "window_right": 100, "num_global": 3}
    for shape, dtype in [
        ((1, 1, 1, 4100, 4100, 64, 64), np.float32),  # 64 slots, values read in place
        ((1, 2, 1, 300, 4100, 64, 64), np.float16),  # 64 slots, values converted
        ((1, 2, 2, 200, 2100, 128, 128), np.float32),  # 32 slots
        ((1, 2, 2, 300, 4100, 64, 40), np.float32),  # 64 slots, values converted (Dv padded)
        ((1, 2, 2, 300, 4100, 64, 64), np.float32),
    ]:
        q, k, v = _inputs(shape, dtype, seed=shape[5] + shape[6])
        got = capi.cpu_forward(q, k, v, num_threads=1, **attrs)
        assert_close(got, _ref(q, k, v, attrs), dtype)
