"""Issue 19 through ONNX Runtime and our library: attribute and input types checked by name at
load, non-finite values at masked positions, NaN/inf propagation, size limits and float32
accuracy with large scores (docs/op-spec.md, "Errors", "Non-finite values and masked positions",
"Numerics")."""

from __future__ import annotations

import ctypes
import math
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from spattn import capi
from spattn.attributes import INPUTS
from spattn.reference import allowed_mask, reference_attention
from spattn.runtime import library_path
from spattn.tolerances import tolerance

F32 = TensorProto.FLOAT
NAMES = tuple(i.name for i in INPUTS)  # the op's inputs in order, from the one table


def _model(attrs=None, types=None, inputs=("query", "key", "value"), out_type=F32) -> bytes:
    """One SparseAttention node; graph inputs are named x0, x1, ... as a fuzzer would."""
    types = types or {}
    ins, names = [], []
    for i, name in enumerate(inputs):
        if name == "":
            names.append("")
            continue
        default = F32 if name in ("query", "key", "value", "sinks") else TensorProto.INT32
        ins.append(helper.make_tensor_value_info(f"x{i}", types.get(name, default), None))
        names.append(f"x{i}")
    node = helper.make_node("SparseAttention", names, ["att"], domain="spattn", **(attrs or {}))
    # The op's output feeds another node: its type must be inferred, not taken from the graph.
    cast = helper.make_node("Cast", ["att"], ["output"], to=F32)
    out = helper.make_tensor_value_info("output", F32, None)
    graph = helper.make_graph([node, cast], "g", ins, [out])
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)]
    )
    m.ir_version = 10
    return m.SerializeToString()


def _session(model: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 4
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _run(feeds: dict, attrs=None) -> np.ndarray:
    names = [n for n in NAMES if n in feeds]
    last = max(NAMES.index(n) for n in names)
    inputs = tuple(n if n in feeds else "" for n in NAMES[: last + 1])
    sess = _session(_model(attrs, inputs=inputs))
    by_graph = {f"x{NAMES.index(n)}": v for n, v in feeds.items()}
    return sess.run(None, by_graph)[0]


def _qkv(b=2, hq=2, hkv=1, lq=24, lk=40, d=16, seed=0):
    g = np.random.default_rng(seed)
    return {
        "query": g.standard_normal((b, hq, lq, d)).astype(np.float32),
        "key": g.standard_normal((b, hkv, lk, d)).astype(np.float32),
        "value": g.standard_normal((b, hkv, lk, d)).astype(np.float32),
    }


def _reference(feeds: dict, attrs=None, scale=None, dtype=torch.float64) -> np.ndarray:
    t = [torch.from_numpy(feeds[n]) for n in ("query", "key", "value")]
    extra = {n: torch.from_numpy(feeds[n]) for n in ("global_mask", "key_starts") if n in feeds}
    kl = torch.from_numpy(feeds["key_lengths"]) if "key_lengths" in feeds else None
    out = reference_attention(
        *t, dict(attrs or {}), key_lengths=kl, scale=scale, compute_dtype=dtype, **extra
    )
    return out.numpy()


def _close(got, ref):
    atol, rtol = tolerance("float32")
    np.testing.assert_allclose(got, ref, atol=atol, rtol=rtol)


# ---- attribute types (D5) ----


@pytest.mark.parametrize(
    "attrs, name, expected, got",
    [
        ({"window_left": "2"}, "window_left", "an INT attribute", "STRING"),
        ({"window_left": [2, 3]}, "window_left", "an INT attribute", "INTS"),
        ({"num_random": [1.0, 2.0]}, "num_random", "an INT attribute", "FLOATS"),
        (
            {"causal": helper.make_tensor("t", TensorProto.INT64, [], [1])},
            "causal",
            "an INT attribute",
            "TENSOR",
        ),
        ({"window_right": 2.0}, "window_right", "an INT attribute", "FLOAT"),
        ({"scale": "0.5"}, "scale", "a FLOAT attribute", "STRING"),
        ({"softcap": 3}, "softcap", "a FLOAT attribute", "INT"),
    ],
)
def test_attribute_of_another_type_is_an_error(attrs, name, expected, got):
    with pytest.raises(Exception, match=f"SparseAttention: {name}: {expected}.*type {got}"):
        _session(_model(attrs))


def test_string_window_does_not_run_as_dense():
    """The fuzzer's case: window_left = "2" once ran as the default (dense); now it never runs."""
    with pytest.raises(Exception, match="window_left"):
        _run(_qkv(), {"window_left": "2", "window_right": 0})


# ---- input types and counts at load (D6) ----


@pytest.mark.parametrize(
    "types, inputs, text",
    [
        ({"key_lengths": TensorProto.INT64}, NAMES[:4], "key_lengths: int32, got int64"),
        ({"block_indices": TensorProto.INT64}, NAMES[:5], "block_indices: int32, got int64"),
        ({"global_mask": TensorProto.BOOL}, NAMES[:6], "global_mask: int32, got bool"),
        ({"key_starts": F32}, NAMES[:7], "key_starts: int32, got float32"),
        ({"sinks": TensorProto.FLOAT16}, NAMES, "sinks: float32 .*got float16"),
        ({"query": TensorProto.INT32}, NAMES[:3], "query: float32, float16 or bfloat16, got int32"),
        ({"key": TensorProto.FLOAT16}, NAMES[:3], r"key: the type of query \(float32\)"),
        ({}, NAMES[:2], "value: a required input, got nothing"),
        ({}, NAMES + ("extra",), "input 8: not used by SparseAttention version 1"),
        ({}, NAMES + ("extra",) * 12, "input 8: not used"),
    ],
)
def test_input_type_and_count_errors_name_the_input(types, inputs, text):
    with pytest.raises(Exception) as info:
        _session(_model(types=types, inputs=inputs))
    msg = str(info.value)
    assert re.search(f"SparseAttention: {text}", msg), msg
    assert "x3" not in msg and "x5" not in msg and "input size" not in msg, msg


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_output_type_follows_query_with_integer_inputs(elem):
    """The permissive declaration still infers the output's type from query, also when the last
    input is an integer one and the output feeds another node."""
    types = {"query": elem, "key": elem, "value": elem}
    sess = _session(_model(types=types, inputs=NAMES[:4]))
    if elem == TensorProto.BFLOAT16:
        return  # numpy has no bfloat16 to feed; loading is what this case checks
    npt = np.float32 if elem == TensorProto.FLOAT else np.float16
    f = {k: v.astype(npt) for k, v in _qkv().items()}
    kl = np.array([40, 7], np.int32)
    out = sess.run(None, {"x0": f["query"], "x1": f["key"], "x2": f["value"], "x3": kl})[0]
    ref = _reference(dict(_qkv(), key_lengths=kl))
    atol, rtol = tolerance("float32" if npt == np.float32 else "float16")
    np.testing.assert_allclose(out, ref, atol=atol, rtol=rtol)


# ---- num_random range (D1) ----


def test_num_random_range():
    with pytest.raises(Exception, match=r"SparseAttention: num_random: in \[0, 65536\], got 65537"):
        _session(_model({"num_random": 65537}))
    with pytest.raises(Exception, match="SparseAttention: num_random"):
        _session(_model({"num_random": 2**31 - 1}))
    feeds = _qkv(lq=1, lk=3)
    out = _run(feeds, {"num_random": 65536, "block_size": 1, "window_left": 0, "window_right": 0})
    _close(out, _reference(feeds))  # 65536 draws among 3 key blocks cover every key


# ---- size limits (D1): shapes only, through the C API (the tensors would take gigabytes) ----


def _shape_only(lq, lk, **attrs):
    args = capi.SpattnArgs()
    args.batch, args.heads_q, args.heads_kv = 1, 1, 1
    args.len_q, args.len_k, args.head_dim, args.head_dim_v = lq, lk, 8, 8
    args.block_size = attrs.get("block_size", 64)
    args.num_random = attrs.get("num_random", 0)
    args.window_left = args.window_right = -1
    err = ctypes.create_string_buffer(1024)
    lib = capi.load()
    rc = lib.spattn_cpu_forward_ex(ctypes.byref(args), ctypes.sizeof(args), err, len(err))
    return rc, err.value.decode()


def test_length_limits():
    limit = 2**30
    rc, msg = _shape_only(limit + 1, 64)
    assert rc and msg.startswith("SparseAttention: query: Lq at most 2^30"), msg
    rc, msg = _shape_only(64, limit + 1)
    assert rc and msg.startswith("SparseAttention: key: Lk at most 2^30"), msg
    rc, msg = _shape_only(2**31 - 1, 2**31 - 64, block_size=65536, num_random=1)
    assert rc and msg.startswith("SparseAttention: query: Lq at most 2^30"), msg
    # At the limit the shapes pass; only the (deliberately) missing tensors are reported.
    rc, msg = _shape_only(limit, limit, block_size=65536, num_random=1)
    assert rc and "non-null pointers" in msg, msg


# ---- non-finite values at masked positions (D2, D3) ----


def _poison(x, rows, value):
    y = x.copy()
    y[:, :, rows] = value
    return y


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_padding_keys_never_contribute(bad):
    feeds = _qkv()
    clean = dict(feeds, key_lengths=np.array([30, 12], np.int32))
    clean["key_starts"] = np.array([3, 0], np.int32)
    dirty = dict(clean)
    for n in ("key", "value"):
        x = clean[n].copy()
        x[0, :, 30:] = bad  # after key_lengths[0]
        x[0, :, :3] = bad  # before key_starts[0]
        x[1, :, 12:] = bad
        dirty[n] = x
    out = _run(dirty)
    assert np.isfinite(out).all()
    _close(out, _reference(clean))


@pytest.mark.parametrize(
    "attrs",
    [
        {"window_left": 3, "window_right": 0},
        {"causal": 1},
        {"window_left": 2, "window_right": 2, "stride": 5},
        {"window_left": 0, "window_right": 0, "num_random": 1, "block_size": 8},
    ],
    ids=["window", "causal", "strided", "random"],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_excluded_keys_never_contribute_on_cpu(attrs, bad):
    """Value and key rows of keys the pattern excludes for some rows hold NaN/inf: the rows that
    exclude them stay finite and exact; rows that allow them turn non-finite."""
    feeds = _qkv(lq=40, lk=40)
    k, v = feeds["key"].copy(), feeds["value"].copy()
    j = 5  # a key inside the rows' range, excluded by most rows of every pattern above
    k[:, :, j] = bad
    v[:, :, j] = bad
    out = _run(dict(feeds, key=k, value=v), attrs)
    mask = allowed_mask(attrs, 40, 40, 2).numpy()  # [1, Hq, Lq, Lk]
    excluded = np.broadcast_to(~mask[..., j], out.shape[:3])
    assert excluded.any() and (~excluded).any()
    _close(out[excluded], _reference(feeds, attrs)[excluded])
    if math.isnan(bad):  # a NaN score of an allowed key makes the row NaN (D4)
        assert np.isnan(out[~excluded]).all()


# ---- NaN/inf propagation in allowed inputs (D4) ----


def test_nan_query_row_gives_nan_row():
    feeds = _qkv()
    q = feeds["query"].copy()
    q[1, 0, 7, 3] = math.nan
    out = _run(dict(feeds, query=q))
    assert np.isnan(out[1, 0, 7]).all()
    keep = np.ones(out.shape[:3], bool)
    keep[1, 0, 7] = False
    _close(out[keep], _reference(feeds)[keep])


def test_nan_query_row_without_allowed_keys_is_zero():
    feeds = _qkv()
    q = feeds["query"].copy()
    q[1, :, :] = math.nan
    out = _run(dict(feeds, query=q, key_lengths=np.array([40, 0], np.int32)))
    assert (out[1] == 0).all() and np.isfinite(out[0]).all()


def test_huge_scale_gives_nan_not_zeros():
    """scale = 3e38 (a valid attribute): scores beyond float32 are +-inf before the softmax; a +inf
    score makes its row NaN, a row of only -inf scores is zeros."""
    feeds = _qkv(b=1, hq=1, lq=3, lk=5, d=4)
    # Zeros in the query: a kernel that folds the scale into the query first makes 0 * inf = NaN
    # components and NaN scores, which must not read as "no allowed key" (zeros).
    q = np.zeros((1, 1, 3, 4), np.float32)
    q[0, 0, :, 0] = [2.0, 3.0, -2.0]  # row 2: every score is -inf
    k = np.ones((1, 1, 5, 4), np.float32)
    out = _run(dict(feeds, query=q, key=k), {"scale": 3e38})
    assert np.isnan(out[0, 0, :2]).all()
    assert (out[0, 0, 2] == 0).all()


def test_minus_inf_scores_weigh_zero():
    """Keys whose score is -inf (overflow of scale * q.k) weigh zero; the others keep theirs."""
    feeds = _qkv(b=1, hq=1, lq=2, lk=6, d=4)
    q = np.full((1, 1, 2, 4), 1e19, np.float32)
    k = np.zeros((1, 1, 6, 4), np.float32)
    k[0, 0, :3] = -1e19  # q.k = -4e38: -inf
    out = _run(dict(feeds, query=q, key=k))
    ref = feeds["value"][0, 0, 3:].astype(np.float64).mean(axis=0)  # scores 0 for keys 3..5
    np.testing.assert_allclose(out[0, 0], np.stack([ref, ref]), atol=2e-5, rtol=1e-4)


def test_nonfinite_value_of_allowed_key_affects_its_elements_only():
    feeds = _qkv(b=1, hq=1, lq=4, lk=8, d=4)
    v = feeds["value"].copy()
    v[0, 0, 2, 1] = math.inf
    out = _run(dict(feeds, value=v))
    assert np.isinf(out[0, 0, :, 1]).all()
    clean = _reference(feeds)
    cols = [0, 2, 3]
    _close(out[0, 0][:, cols], clean[0, 0][:, cols])


# ---- float32 accuracy with large scores (D7) ----


@pytest.mark.parametrize("target", [50.0, 200.0, 500.0])
@pytest.mark.parametrize("d", [16, 64, 128])
def test_float32_large_scores_meet_the_bound(target, d):
    """Scores scale * q.k of magnitude ~target (up to ~4x): the output is within the float32
    tolerance plus the score-rounding term of docs/op-spec.md ("Numerics")."""
    feeds = _qkv(b=1, hq=2, hkv=2, lq=70, lk=150, d=d, seed=int(target) + d)
    scale = target / math.sqrt(d)
    out = _run(feeds, {"scale": scale})
    ref = _reference(feeds, scale=scale)
    atol, rtol = tolerance("float32")
    q, k, v = feeds["query"], feeds["key"], feeds["value"]
    m = scale * np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max()
    extra = math.sqrt(d) * 2.0**-24 * m * np.abs(v).max()
    err = np.abs(out - ref) - (atol + rtol * np.abs(ref))
    assert err.max() <= extra, (err.max(), extra)


@pytest.mark.parametrize("seed", range(6))
def test_float32_exact_large_scores_meet_the_table(seed):
    """Small-integer query/key and a power-of-two scale make every score exact in float32, so
    nothing but the kernel's own softmax arithmetic separates it from the float64 reference: the
    plain float32 tolerance must hold for scores in the thousands. (Folding scale * log2(e) into
    the query before the maximum is subtracted misses it by up to ~20x here.)"""
    g = np.random.default_rng(seed)
    d = (16, 32, 64)[seed % 3]
    scale = float(2 ** (2 + seed % 3))
    feeds = {
        "query": g.integers(-4, 5, (1, 2, 50, d)).astype(np.float32),
        "key": g.integers(-4, 5, (1, 2, 120, d)).astype(np.float32),
        "value": g.standard_normal((1, 2, 120, d)).astype(np.float32),
    }
    out = _run(feeds, {"scale": scale})
    _close(out, _reference(feeds, scale=scale))
