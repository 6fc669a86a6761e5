"""The optional inputs global_mask, key_starts, sinks and the softcap attribute (docs/op-spec.md)
through ONNX Runtime's CPU execution provider and our library, against a float64 NumPy statement
of the spec written here (independent of spattn.reference and of the C++ pattern rules).

Each addition alone and combined with every existing component (band, causal, num_global, stride,
num_random, block_indices, key_lengths), GQA, Lq != Lk, float32/float16/bfloat16, head dims 32,
96 and 256; then every invalid value of the additions, each an error naming the input.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from spattn.runtime import library_path
from spattn.tolerances import TOLERANCES

INPUTS = (
    "query",
    "key",
    "value",
    "key_lengths",
    "block_indices",
    "global_mask",
    "key_starts",
    "sinks",
)
ELEM = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
}
NP_ROUND = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
DTYPES = ("float32", "float16", "bfloat16")


# ---- the spec in float64 NumPy ----


def _mix32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def _random_block(seed: int, h: int, qb: int, r: int, nkb: int) -> int:
    x = _mix32(seed + 0x9E3779B9)
    x = _mix32(x ^ h)
    x = _mix32(x ^ qb)
    x = _mix32(x ^ r)
    return x % nkb


def spec_mask(b, h, lq, lk, a, key_lengths, block_indices, global_mask, key_starts, hq):
    """allowed(b, h, i, j) of docs/op-spec.md as a [Lq, Lk] boolean array."""
    wl, wr = a.get("window_left", -1), a.get("window_right", -1)
    causal, g, s = a.get("causal", 0), a.get("num_global", 0), a.get("stride", 0)
    bs, r, seed = a.get("block_size", 64), a.get("num_random", 0), a.get("seed", 0)
    p = np.arange(lq)[:, None] + lk - lq  # query positions
    j = np.arange(lk)[None, :]
    d = p - j
    other = g > 0 or s > 0 or r > 0 or block_indices is not None or global_mask is not None
    chunk = a.get("chunk_size", 0)
    local_on = chunk > 0 or not (wl == -1 and wr == -1 and other)
    local = np.full((lq, lk), local_on)
    if wl != -1:
        local &= d <= wl
    if wr != -1:
        local &= -d <= wr
    if chunk > 0:  # the query's run of `chunk` positions, counted from the first valid key
        origin = 0 if key_starts is None else int(key_starts[b])
        local &= np.floor((p - origin) / chunk) == np.floor((j - origin) / chunk)
    glob = (j < g) | ((p >= 0) & (p < g))
    if global_mask is not None:
        gk = global_mask[b] != 0
        glob = glob | gk[None, :]
        pc = np.clip(p[:, 0], 0, lk - 1)
        grow = (p[:, 0] >= 0) & gk[pc]
        glob = glob | grow[:, None]
    strided = (d % s == 0) if s > 0 else np.zeros((lq, lk), bool)
    blocks = np.zeros((lq, lk), bool)
    nqb, nkb = math.ceil(lq / bs), math.ceil(lk / bs)
    for qb in range(nqb):
        sel = {_random_block(seed, h, qb, x, nkb) for x in range(r)}
        if block_indices is not None:
            hl = h if block_indices.shape[0] == hq else 0
            sel |= {int(e) for e in block_indices[hl, qb] if e >= 0}
        for kb in sel:
            blocks[qb * bs : (qb + 1) * bs, kb * bs : (kb + 1) * bs] = True
    allowed = local | glob | strided | blocks
    end = lk if key_lengths is None else key_lengths[b]
    start = 0 if key_starts is None else key_starts[b]
    allowed &= (j >= start) & (j < end)
    if causal:
        allowed &= j <= p
    return allowed


def spec_attention(q, k, v, a, key_lengths=None, block_indices=None, global_mask=None,
                   key_starts=None, sinks=None):  # fmt: skip
    """The op's output in float64 from (already rounded) inputs."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    bsz, hq, lq, dim = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    scale = a.get("scale", 0.0) or 1.0 / math.sqrt(dim)
    cap = a.get("softcap", 0.0)
    out = np.zeros((bsz, hq, lq, v.shape[3]))
    for b in range(bsz):
        for h in range(hq):
            hk = h // (hq // hkv)
            allowed = spec_mask(
                b, h, lq, lk, a, key_lengths, block_indices, global_mask, key_starts, hq
            )
            s = scale * q[b, h] @ k[b, hk].T
            if cap > 0:
                s = cap * np.tanh(s / cap)
            s = np.where(allowed, s, -np.inf)
            for i in range(lq):
                if not allowed[i].any():
                    continue  # no allowed key: zeros
                m = s[i].max()
                e = np.exp(s[i] - m)
                den = e.sum()
                if sinks is not None:
                    den += np.exp(np.float64(sinks[h]) - m)
                out[b, h, i] = e @ v[b, hk] / den
    return out


# ---- ONNX Runtime ----


def _model(dtype: str, present: dict[str, int], attrs: dict) -> bytes:
    """One SparseAttention node; query/key/value/output travel as float32 and are cast to and from
    `dtype` in the graph. `present` maps each optional input to its ONNX element type."""
    last = max([2] + [INPUTS.index(n) for n in present])
    names, ins, nodes = [], [], []
    for idx, name in enumerate(INPUTS[: last + 1]):
        if idx < 3:
            ins.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            nodes.append(helper.make_node("Cast", [name], [name + "_t"], to=ELEM[dtype]))
            names.append(name + "_t")
        elif name in present:
            ins.append(helper.make_tensor_value_info(name, present[name], None))
            names.append(name)
        else:
            names.append("")
    nodes.append(helper.make_node("SparseAttention", names, ["out_t"], domain="spattn", **attrs))
    nodes.append(helper.make_node("Cast", ["out_t"], ["output"], to=TensorProto.FLOAT))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", ins, [out])
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)]
    )
    m.ir_version = 10
    return m.SerializeToString()


def _session(model: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 4
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


NP_TO_ONNX = {
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
}


def run_ort(dtype, q, k, v, attrs, **optional):
    optional = {n: x for n, x in optional.items() if x is not None}
    model = _model(dtype, {n: NP_TO_ONNX[x.dtype] for n, x in optional.items()}, attrs)
    feeds = {"query": q, "key": k, "value": v, **optional}
    return _session(model).run(None, feeds)[0]


def _rounded(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    return x.astype(NP_ROUND[dtype]).astype(np.float32)


def check_case(dtype, shape, attrs, *, key_lengths=False, block_indices=False, global_mask=False,
               key_starts=False, sinks=False, seed=0, gm_density=8):  # fmt: skip
    b, hq, hkv, lq, lk, dim, dv = shape
    rng = np.random.default_rng(seed)
    q = _rounded((b, hq, lq, dim), dtype, rng)
    k = _rounded((b, hkv, lk, dim), dtype, rng)
    v = _rounded((b, hkv, lk, dv), dtype, rng)
    opt: dict[str, np.ndarray | None] = {}
    kl = None
    if key_lengths:
        kl = np.array([lk - (7 * n) % lk for n in range(b)], np.int32)
        opt["key_lengths"] = kl
    bi = None
    if block_indices:
        bs = attrs.get("block_size", 64)
        nqb, nkb = math.ceil(lq / bs), math.ceil(lk / bs)
        bi = rng.integers(-1, nkb, size=(hq, nqb, 2)).astype(np.int32)
        opt["block_indices"] = bi
    gm = None
    if global_mask:
        gm = np.where(
            rng.integers(0, gm_density, size=(b, lk)) == 0, rng.integers(1, 4, (b, lk)), 0
        )
        gm = (gm * np.where(rng.integers(0, 2, (b, lk)) == 0, 1, -1)).astype(np.int32)
        opt["global_mask"] = gm
    ks = None
    if key_starts:
        end = kl if kl is not None else np.full(b, lk, np.int32)
        ks = np.array(
            [min(int(end[n]), (11 * n + 3) % max(1, lk // 2)) for n in range(b)], np.int32
        )
        opt["key_starts"] = ks
    sk = None
    if sinks:
        sk = (2.0 * rng.standard_normal(hq)).astype(np.float32)
        opt["sinks"] = sk
    got = run_ort(dtype, q, k, v, attrs, **opt)
    want = spec_attention(q, k, v, attrs, kl, bi, gm, ks, sk)
    atol, rtol = TOLERANCES[dtype]
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    assert np.isfinite(got).all() and not bad.any(), (
        f"{dtype} {shape} {attrs} {sorted(opt)}: max abs err {err.max():.3g}, "
        f"{int(bad.sum())}/{bad.size} outside (atol {atol}, rtol {rtol})"
    )
    return got, want


COMPONENTS = {
    "dense": ({}, {}),
    "band": ({"window_left": 9, "window_right": 5}, {}),
    "causal": ({"causal": 1}, {}),
    "causal_band": ({"causal": 1, "window_left": 12}, {}),
    "num_global": ({"window_left": 4, "window_right": 4, "num_global": 3}, {}),
    "stride": ({"causal": 1, "window_left": 3, "stride": 5}, {}),
    "num_random": ({"num_random": 2, "block_size": 8, "seed": 7}, {}),
    "block_indices": ({"block_size": 8, "window_left": 0, "window_right": 0}, {"block_indices": 1}),
    "key_lengths": ({"window_left": 6, "window_right": 6}, {"key_lengths": 1}),
}
ADDITIONS = {
    "global_mask": ({}, {"global_mask": 1}),
    "key_starts": ({}, {"key_starts": 1}),
    "sinks": ({}, {"sinks": 1}),
    "softcap": ({"softcap": 2.5}, {}),
    "all": ({"softcap": 3.0}, {"global_mask": 1, "key_starts": 1, "sinks": 1}),
    "chunk_size": ({"chunk_size": 7}, {}),
    "chunk_size_key_starts": ({"chunk_size": 5}, {"key_starts": 1}),
}
SHAPES = [  # B, Hq, Hkv, Lq, Lk, D, Dv
    (2, 4, 2, 37, 45, 16, 16),  # GQA, Lq < Lk
    (2, 2, 1, 41, 29, 8, 12),  # MQA, Lq > Lk (negative positions), Dv != D
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("addition", sorted(ADDITIONS))
def test_addition_with_component(addition, component, dtype):
    a_attrs, a_in = ADDITIONS[addition]
    c_attrs, c_in = COMPONENTS[component]
    attrs = {**c_attrs, **a_attrs}
    for n, shape in enumerate(SHAPES):
        check_case(dtype, shape, attrs, seed=n, **{k: bool(x) for k, x in {**c_in, **a_in}.items()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [32, 96, 256])
def test_head_dims(dim, dtype):
    attrs = {"window_left": 16, "window_right": 16, "num_global": 2, "softcap": 20.0}
    check_case(dtype, (2, 4, 2, 70, 80, dim, dim), attrs, key_lengths=True, global_mask=True,
               key_starts=True, sinks=True)  # fmt: skip


def test_everything_together_with_long_rows():
    """All components and all additions at once, over more than one 64-key tile of the kernel."""
    attrs = {
        "window_left": 20,
        "window_right": 3,
        "causal": 1,
        "num_global": 2,
        "stride": 17,
        "num_random": 1,
        "block_size": 32,
        "seed": 5,
        "softcap": 15.0,
        "scale": 0.2,
    }
    for dtype in DTYPES:
        check_case(dtype, (2, 4, 2, 150, 260, 32, 32), attrs, key_lengths=True, block_indices=True,
                   global_mask=True, key_starts=True, sinks=True, gm_density=40)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "lq, lk",
    [(37, 37), (1, 53), (6, 53), (130, 130)],  # prefill, decode, a few drafts, past one tile
)
def test_chunked_attention_as_llama4(lq, lk, dtype):
    """Llama 4's chunked layers: causal, chunks of 8, GQA 4:2, left padding of 0, 3 and 13
    tokens (key_starts: the chunks start at the first real token), and with key_lengths."""
    attrs = {"causal": 1, "chunk_size": 8}
    b, hq, hkv, dim = 3, 4, 2, 16
    rng = np.random.default_rng(lq)
    q = _rounded((b, hq, lq, dim), dtype, rng)
    k = _rounded((b, hkv, lk, dim), dtype, rng)
    v = _rounded((b, hkv, lk, dim), dtype, rng)
    ks = np.array([0, 3, 13], np.int32)
    kl = np.array([lk, lk, lk - 1], np.int32)
    got = run_ort(dtype, q, k, v, attrs, key_starts=ks, key_lengths=kl)
    want = spec_attention(q, k, v, attrs, kl, None, None, ks)
    atol, rtol = TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    # the chunks change the answer: causal attention over the same keys differs
    plain = spec_attention(q, k, v, {"causal": 1}, kl, None, None, ks)
    assert np.abs(plain - want).max() > 1e-2


def test_chunk_size_of_a_length_or_more_is_causal_attention():
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((1, 2, 24, 8)).astype(np.float32) for _ in range(3))
    for c in (24, 25, 2**31 - 1):
        a = run_ort("float32", q, k, v, {"causal": 1, "chunk_size": c})
        np.testing.assert_allclose(a, run_ort("float32", q, k, v, {"causal": 1}), atol=1e-6)


def test_global_mask_union_with_num_global():
    """global_mask and num_global combine by union; a global query row attends every valid key."""
    attrs = {"window_left": 1, "window_right": 1, "num_global": 2}
    check_case("float32", (1, 2, 2, 64, 64, 16, 16), attrs, global_mask=True, gm_density=6)


def test_global_mask_alone_turns_the_default_band_off():
    """With the default windows, the presence of global_mask makes the local band off (as for
    num_global): a mask of zeros allows no key, so every row is zeros."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 10, 8)).astype(np.float32) for _ in range(3))
    gm = np.zeros((1, 10), np.int32)
    out = run_ort("float32", q, k, v, {}, global_mask=gm)
    assert np.array_equal(out, np.zeros_like(out))
    gm[0, 4] = 1  # key 4 is global, and query 4 attends every key
    out = run_ort("float32", q, k, v, {}, global_mask=gm)
    want = spec_attention(q, k, v, {}, global_mask=gm)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=1e-4)
    assert np.abs(out[0, :, 4] - out[0, :, 3]).max() > 1e-3  # row 4 is not row 3's single key


def test_key_starts_left_padding_equals_right_padding():
    """The same tokens left-padded (key_starts) or right-padded (key_lengths) give the same output
    for the non-padding queries, with a causal band (positions shift with the padding)."""
    rng = np.random.default_rng(4)
    n, pad, h, dim = 20, 7, 2, 16
    q0, k0, v0 = (rng.standard_normal((1, h, n, dim)).astype(np.float32) for _ in range(3))
    z = np.zeros((1, h, pad, dim), np.float32)
    left = [np.concatenate([z + 9.0, x], axis=2) for x in (q0, k0, v0)]
    right = [np.concatenate([x, z - 5.0], axis=2) for x in (q0, k0, v0)]
    attrs = {"causal": 1, "window_left": 5}
    out_l = run_ort("float32", *left, attrs, key_starts=np.array([pad], np.int32))
    out_r = run_ort("float32", *right, attrs, key_lengths=np.array([n], np.int32))
    np.testing.assert_allclose(out_l[:, :, pad:], out_r[:, :, :n], atol=2e-5, rtol=1e-4)


def test_rows_without_keys_are_zeros_with_sinks():
    """key_starts == key_lengths leaves no valid key: the rows are zeros, sinks or not."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 2, 6, 8)).astype(np.float32) for _ in range(3))
    kl = np.array([6, 3], np.int32)
    ks = np.array([2, 3], np.int32)
    sk = np.array([0.5, -1.0], np.float32)
    out = run_ort("float32", q, k, v, {"softcap": 5.0}, key_lengths=kl, key_starts=ks, sinks=sk)
    assert np.array_equal(out[1], np.zeros_like(out[1]))
    want = spec_attention(q, k, v, {"softcap": 5.0}, kl, None, None, ks, sk)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=1e-4)


def test_sinks_values():
    """A sink of -inf is no sink; a large sink shrinks the output toward zero; the sink is not
    softcapped (a sink above the softcap still dominates)."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((1, 3, 5, 8)).astype(np.float32) for _ in range(3))
    plain = run_ort("float32", q, k, v, {})
    sk = np.array([-np.inf, 40.0, 0.0], np.float32)
    out = run_ort("float32", q, k, v, {}, sinks=sk)
    np.testing.assert_allclose(out[0, 0], plain[0, 0], atol=2e-6, rtol=1e-5)
    assert np.abs(out[0, 1]).max() < 1e-12
    np.testing.assert_allclose(out, spec_attention(q, k, v, {}, sinks=sk), atol=2e-5, rtol=1e-4)
    capped = run_ort("float32", q, k, v, {"softcap": 1.0}, sinks=np.array([5.0] * 3, np.float32))
    want = spec_attention(q, k, v, {"softcap": 1.0}, sinks=np.array([5.0] * 3, np.float32))
    np.testing.assert_allclose(capped, want, atol=2e-6, rtol=1e-4)


def test_softcap_bounds_the_scores():
    """With a tiny softcap every score is within +-softcap: the softmax is almost uniform."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 1, 4, 8)).astype(np.float32) * 10 for _ in range(3))
    out = run_ort("float32", q, k, v, {"softcap": 1e-3})
    mean = np.broadcast_to(v[0, 0].mean(0), (4, 8))
    assert np.abs(out[0, 0] - mean).max() < 0.05 * np.abs(v).max()
    np.testing.assert_allclose(
        out, spec_attention(q, k, v, {"softcap": 1e-3}), atol=1e-4, rtol=1e-4
    )


def test_old_model_unchanged():
    """A node with none of the additions gives the same output as before them (the spec)."""
    check_case("float32", (2, 4, 2, 37, 45, 16, 16), {"window_left": 3, "window_right": 3})


# ---- invalid values: errors naming the input ----


def _qkv(b=2, hq=4, hkv=2, lq=8, lk=10, d=8):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((b, hq, lq, d)).astype(np.float32),
        rng.standard_normal((b, hkv, lk, d)).astype(np.float32),
        rng.standard_normal((b, hkv, lk, d)).astype(np.float32),
    )


@pytest.mark.parametrize(
    "name, value, text",
    [
        ("global_mask", np.zeros((2, 11), np.int32), r"shape \[B, Lk\] = \[2, 10\]"),
        ("global_mask", np.zeros((3, 10), np.int32), r"shape \[B, Lk\]"),
        ("global_mask", np.zeros((20,), np.int32), r"shape \[B, Lk\]"),
        ("key_starts", np.zeros((3,), np.int32), r"shape \[B\]"),
        ("key_starts", np.zeros((2, 1), np.int32), r"shape \[B\]"),
        ("key_starts", np.array([0, -1], np.int32), r"key_starts\[1\] = -1"),
        ("key_starts", np.array([11, 0], np.int32), r"key_starts\[0\] = 11"),
        ("sinks", np.zeros((5,), np.float32), r"shape \[Hq\] = \[4\]"),
        ("sinks", np.zeros((1, 4), np.float32), r"shape \[Hq\]"),
        ("sinks", np.array([0, np.nan, 0, 0], np.float32), r"sinks\[1\] = nan"),
        ("sinks", np.array([0, 0, np.inf, 0], np.float32), r"sinks\[2\] = inf"),
    ],
)
def test_bad_new_input(name, value, text):
    q, k, v = _qkv()
    with pytest.raises(Exception, match=f"SparseAttention: {name}: .*{text}"):
        run_ort("float32", q, k, v, {}, **{name: value})


@pytest.mark.parametrize(
    "name, value, expected, got",
    [
        ("global_mask", np.zeros((2, 10), np.float32), "int32", "float32"),
        ("global_mask", np.zeros((2, 10), np.int64), "int32", "int64"),
        ("key_starts", np.zeros((2,), np.int64), "int32", "int64"),
        ("sinks", np.zeros((4,), np.float16), r"float32 \(whatever the type of query\)", "float16"),
        ("sinks", np.zeros((4,), np.int32), r"float32 \(whatever the type of query\)", "int32"),
        ("key_lengths", np.zeros((2,), np.int64), "int32", "int64"),
    ],
)
def test_bad_new_input_type(name, value, expected, got):
    """The library checks the element types of the integer inputs and of sinks when the session
    is created, naming the op's input (ONNX Runtime's own check, which names graph tensors, is not
    the one that fires)."""
    q, k, v = _qkv()
    with pytest.raises(Exception, match=rf"SparseAttention: {name}: {expected}, got {got}"):
        run_ort("float32", q, k, v, {}, **{name: value})


def test_key_starts_above_key_lengths():
    q, k, v = _qkv()
    with pytest.raises(
        Exception,
        match=r"SparseAttention: key_starts: .*key_starts\[1\] = 6 with key_lengths\[1\] = 5",
    ):
        run_ort(
            "float32",
            q,
            k,
            v,
            {},
            key_lengths=np.array([10, 5], np.int32),
            key_starts=np.array([0, 6], np.int32),
        )


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), float("-inf")])
def test_bad_softcap(value):
    q, k, v = _qkv()
    with pytest.raises(Exception, match="SparseAttention: softcap: a finite value >= 0"):
        run_ort("float32", q, k, v, {"softcap": value})


def test_softcap_of_type_int():
    q, k, v = _qkv()
    with pytest.raises(
        Exception,
        match="SparseAttention: softcap: a FLOAT attribute .*, got an attribute of type INT",
    ):
        run_ort("float32", q, k, v, {"softcap": 3})


def test_nine_inputs():
    q, k, v = _qkv()
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("q", "k", "v")]
    ins.append(helper.make_tensor_value_info("x", TensorProto.INT32, None))
    node = helper.make_node(
        "SparseAttention", ["q", "k", "v", "", "", "", "", "", "x"], ["o"], domain="spattn"
    )
    graph = helper.make_graph(
        [node], "g", ins, [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)]
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)]
    )
    m.ir_version = 10
    with pytest.raises(Exception, match="SparseAttention: input 8: not used by SparseAttention"):
        _session(m.SerializeToString()).run(
            None, {"q": q, "k": k, "v": v, "x": np.zeros(2, np.int32)}
        )


@pytest.mark.parametrize("cap", [1e-40, 1e-3, 50.0, 1e30, 3e38])
def test_softcap_extremes(cap):
    """A subnormal softcap (every score +-softcap), and one so large it changes nothing."""
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((1, 2, 70, 16)).astype(np.float32) for _ in range(3))
    q[0, 0, 3] = 0.0  # scores of exactly 0
    out = run_ort("float32", q, k, v, {"softcap": cap})
    np.testing.assert_allclose(out, spec_attention(q, k, v, {"softcap": cap}), atol=2e-5, rtol=1e-4)
