"""Every invalid input of docs/op-spec.md ("Errors") through ONNX Runtime and our library.

Each case must fail with an ONNX Runtime error whose message names the input or attribute; none
may crash the process or return an output. Attributes fail when the session creates the kernel,
inputs when the session runs.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from spattn.runtime import library_path

F32 = TensorProto.FLOAT


def _model(attrs=None, inputs=("query", "key", "value"), types=None) -> bytes:
    types = types or {}
    ins = []
    for name in inputs:
        if name == "":
            continue
        default = TensorProto.INT32 if name in ("key_lengths", "block_indices", "extra") else F32
        ins.append(helper.make_tensor_value_info(name, types.get(name, default), None))
    node = helper.make_node(
        "SparseAttention", list(inputs), ["output"], domain="spattn", **(attrs or {})
    )
    out = helper.make_tensor_value_info("output", types.get("query", F32), None)
    graph = helper.make_graph([node], "g", ins, [out])
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)]
    )
    m.ir_version = 10
    return m.SerializeToString()


def _session(model: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 4  # the errors are expected; keep the test log clean
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _qkv(b=2, hq=4, hkv=2, lq=32, lk=40, d=16, dv=16, dtype=np.float32):
    g = np.random.default_rng(0)
    return {
        "query": g.standard_normal((b, hq, lq, d)).astype(dtype),
        "key": g.standard_normal((b, hkv, lk, d)).astype(dtype),
        "value": g.standard_normal((b, hkv, lk, dv)).astype(dtype),
    }


# ---- attributes: rejected when the kernel is created ----


@pytest.mark.parametrize(
    "attrs, name",
    [
        ({"scale": float("nan")}, "scale"),
        ({"scale": float("inf")}, "scale"),
        ({"scale": -0.5}, "scale"),
        ({"window_left": -2}, "window_left"),
        ({"window_right": -7}, "window_right"),
        ({"causal": 2}, "causal"),
        ({"num_global": -1}, "num_global"),
        ({"stride": -3}, "stride"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 65537}, "block_size"),
        ({"num_random": -1}, "num_random"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**31}, "seed"),
        ({"window_left": 2**31}, "window_left"),
        ({"window_left": 3.0}, "window_left"),  # a FLOAT where an INT is expected
        ({"scale": 2}, "scale"),  # an INT where a FLOAT is expected
    ],
)
def test_bad_attribute(attrs, name):
    with pytest.raises(Exception, match=f"SparseAttention: {name}:"):
        _session(_model(attrs)).run(None, _qkv())


# ---- inputs: rejected at every run ----


def _run(feeds, attrs=None, inputs=None, types=None):
    inputs = inputs or tuple(feeds)
    return _session(_model(attrs, inputs, types)).run(None, feeds)


@pytest.mark.parametrize(
    "change, name, text",
    [
        (lambda f: f.update(query=f["query"][0]), "query", "rank 4"),
        (lambda f: f.update(key=f["key"][:, :, :, :, None]), "key", "rank 4"),
        (lambda f: f.update(value=f["value"][0]), "value", "rank 4"),
        (lambda f: f.update(key=f["key"][:1]), "key", "batch size"),
        (lambda f: f.update(value=f["value"][:1]), "value", "batch size"),
        (lambda f: f.update(query=f["query"][:, :3]), "query", "multiple of"),
        (lambda f: f.update(value=f["value"][:, :1]), "value", "Hkv"),
        (lambda f: f.update(key=f["key"][:, :, :, :8]), "key", "head dim"),
        (lambda f: f.update(value=f["value"][:, :, :20]), "value", "Lk"),
        (lambda f: f.update(query=f["query"][:, :, :0]), "query", "non-empty"),
        (
            lambda f: f.update(key=f["key"][:, :, :0], value=f["value"][:, :, :0]),
            "key",
            "non-empty",
        ),
    ],
)
def test_bad_shapes(change, name, text):
    feeds = _qkv()
    change(feeds)
    with pytest.raises(Exception, match=f"SparseAttention: {name}: .*{text}"):
        _run(feeds)


def test_unsupported_head_dim():
    with pytest.raises(Exception, match="SparseAttention: query: head dim"):
        _run(_qkv(d=513, dv=16))
    with pytest.raises(Exception, match="SparseAttention: value: head dim"):
        _run(_qkv(dv=600))


def test_bad_dtypes():
    feeds = _qkv(dtype=np.float64)
    types = {n: TensorProto.DOUBLE for n in feeds}
    with pytest.raises(
        Exception, match="SparseAttention: query: float32, float16 or bfloat16, got float64"
    ):
        _run(feeds, types=types)
    feeds = _qkv()
    feeds["key"] = feeds["key"].astype(np.float16)
    with pytest.raises(Exception, match="SparseAttention: key: the type of query"):
        _run(feeds, types={"key": TensorProto.FLOAT16})


@pytest.mark.parametrize(
    "lengths, text",
    [
        (np.array([40, 41], np.int32), r"key_lengths\[1\] = 41"),
        (np.array([-1, 3], np.int32), r"key_lengths\[0\] = -1"),
        (np.array([3], np.int32), r"shape \[B\]"),
        (np.array([[3, 3]], np.int32), r"shape \[B\]"),
    ],
)
def test_bad_key_lengths(lengths, text):
    feeds = dict(_qkv(), key_lengths=lengths)
    with pytest.raises(Exception, match=f"SparseAttention: key_lengths: .*{text}"):
        _run(feeds)


@pytest.mark.parametrize(
    "indices, text",
    [
        (np.zeros((2, 2, 1), np.int32), "Hl = 1 or Hq"),  # Hl = 2, Hq = 4
        (np.zeros((1, 3, 1), np.int32), "ceil"),  # 32 / 16 = 2 query blocks
        (np.zeros((2, 1), np.int32), "rank 3"),
        (np.full((1, 2, 1), 3, np.int32), "entries"),  # 40 / 16 -> 3 key blocks: 0..2
        (np.full((4, 2, 2), -2, np.int32), "entries"),
    ],
)
def test_bad_block_indices(indices, text):
    feeds = dict(_qkv(), block_indices=indices)
    inputs = ("query", "key", "value", "", "block_indices")
    with pytest.raises(Exception, match=f"SparseAttention: block_indices: .*{text}"):
        _run(feeds, attrs={"block_size": 16}, inputs=inputs)


def test_absent_key_lengths_with_block_indices_runs():
    """An omitted optional input written as "" between present ones is accepted."""
    feeds = dict(_qkv(), block_indices=np.array([[[0, -1], [2, 1]]], np.int32))
    out = _run(
        feeds, attrs={"block_size": 16}, inputs=("query", "key", "value", "", "block_indices")
    )
    assert out[0].shape == (2, 4, 32, 16) and np.isfinite(out[0]).all()


def test_error_does_not_poison_the_session():
    """After a failing run, the same session still runs valid inputs."""
    sess = _session(_model({"window_left": 4, "window_right": 4}))
    bad = _qkv()
    bad["query"] = bad["query"][:, :3]
    with pytest.raises(Exception, match="multiple of"):
        sess.run(None, bad)
    out = sess.run(None, _qkv())[0]
    assert out.shape == (2, 4, 32, 16)
