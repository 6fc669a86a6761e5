"""A decode step of our op equals ONNX Runtime's own decode attention with a local window.

``com.microsoft::GroupQueryAttention`` with ``local_window_size = W`` and a past cache against
``spattn::SparseAttention`` with ``causal=1, window_left=W-1`` over the same cache (op spec: a
causal window of W keys is the query and the W - 1 keys before it), both in ONNX Runtime's CPU
execution provider, float32. The benchmark of the same comparison is
benchmarks/bench_cpu_decode.py; this is its correctness check, no timing.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from spattn.runtime import ort_session
from spattn.tolerances import assert_close

F32 = TensorProto.FLOAT


def _model(nodes, ins, outs, domain):
    graph = helper.make_graph(nodes, "decode", ins, outs)
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(domain, 1)]
    )
    m.ir_version = 10
    return m.SerializeToString()


def _ours(window_left):
    vi = helper.make_tensor_value_info
    ins = [vi(n, F32, None) for n in ("query", "key", "value")]
    node = helper.make_node(
        "SparseAttention",
        ["query", "key", "value"],
        ["output"],
        domain="spattn",
        causal=1,
        window_left=window_left,
    )
    return ort_session(_model([node], ins, [vi("output", F32, None)], "spattn"), intra_op_threads=2)


def _gqa(hq, hkv, window):
    vi = helper.make_tensor_value_info
    names = ["query", "key", "value", "past_key", "past_value"]
    ins = [vi(n, F32, None) for n in names]
    ins += [
        vi("seqlens_k", TensorProto.INT32, [1]),
        vi("total_sequence_length", TensorProto.INT32, []),
    ]
    outs = [vi(n, F32, None) for n in ("output", "present_key", "present_value")]
    node = helper.make_node(
        "GroupQueryAttention",
        [i.name for i in ins],
        [o.name for o in outs],
        domain="com.microsoft",
        num_heads=hq,
        kv_num_heads=hkv,
        local_window_size=window,
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(
        _model([node], ins, outs, "com.microsoft"), so, providers=["CPUExecutionProvider"]
    )


def _gqa_step(sess, q, k, v):
    """One decode step: the last token of k/v ([1, Hkv, T, D]) is the new one, the rest the past.
    Returns the output as [1, Hq, 1, D] and the present key cache."""
    _, hq, _, d = q.shape

    def bsh(x):  # [1, H, 1, D] -> [1, 1, H * D]
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(1, 1, -1))

    total = k.shape[2]
    out, present_k, _ = sess.run(
        None,
        {
            "query": bsh(q),
            "key": bsh(k[:, :, -1:]),
            "value": bsh(v[:, :, -1:]),
            "past_key": np.ascontiguousarray(k[:, :, :-1]),
            "past_value": np.ascontiguousarray(v[:, :, :-1]),
            "seqlens_k": np.array([total - 1], np.int32),
            "total_sequence_length": np.array(total, np.int32),
        },
    )
    return out.reshape(1, 1, hq, d).transpose(0, 2, 1, 3), present_k


@pytest.mark.parametrize(
    "hq, hkv, d, window",
    [(8, 2, 64, 16), (4, 1, 32, 7), (6, 6, 128, 40)],
    ids=["gqa4_d64", "mqa_d32", "mha_d128"],
)
def test_decode_step_equals_group_query_attention(hq, hkv, d, window):
    gqa, ours = _gqa(hq, hkv, window), _ours(window - 1)
    g = np.random.default_rng(hq * d + window)
    cache = 3 * window + 5
    k = g.standard_normal((1, hkv, cache, d), dtype=np.float32)
    v = g.standard_normal((1, hkv, cache, d), dtype=np.float32)
    # Caches shorter than, equal to and longer than the window: the window only bites in the last.
    for total in (window - 3, window, window + 1, cache):
        q = g.standard_normal((1, hq, 1, d), dtype=np.float32)
        kt, vt = k[:, :, :total], v[:, :, :total]
        want, present = _gqa_step(gqa, q, kt, vt)
        np.testing.assert_array_equal(present, kt)  # ONNX Runtime's cache is the one we read
        got = ours.run(None, {"query": q, "key": kt, "value": vt})[0]
        assert got.shape == want.shape
        assert_close(got, want, np.float32)


def test_window_alignment_is_discriminating():
    """window_left = W (one key more than local_window_size = W allows) gives another answer:
    the equality above pins the alignment, it does not hold for any window."""
    hq, hkv, d, window = 8, 2, 64, 16
    g = np.random.default_rng(1)
    q = g.standard_normal((1, hq, 1, d), dtype=np.float32)
    k = g.standard_normal((1, hkv, 60, d), dtype=np.float32)
    v = g.standard_normal((1, hkv, 60, d), dtype=np.float32)
    want, _ = _gqa_step(_gqa(hq, hkv, window), q, k, v)
    wider = _ours(window).run(None, {"query": q, "key": k, "value": v})[0]
    assert np.abs(wider - want).max() > 1e-3
