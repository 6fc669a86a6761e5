"""ONNX Runtime with the spattn custom-op library against the reference, for every family and
dtype; errors name the offending input. These tests need the built libspattn_ort and fail (they do
not skip) without it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import FAMILIES, listed_layout, make_qkv
from onnx import TensorProto as TP
from onnx import helper

import spattn
from spattn import Pattern, runtime
from spattn.models import SAMPLES
from spattn.reference import reference_attention
from spattn.tolerances import assert_close

ELEM = {torch.float32: TP.FLOAT, torch.float16: TP.FLOAT16, torch.bfloat16: TP.BFLOAT16}
DTYPES = list(ELEM)


def _single_node(pattern, dtype, with_lengths, with_layout, bi_shape=None):
    e = ELEM[dtype]
    vi = helper.make_tensor_value_info
    inputs = [
        vi("query", e, ["B", "Hq", "Lq", "D"]),
        vi("key", e, ["B", "Hkv", "Lk", "D"]),
        vi("value", e, ["B", "Hkv", "Lk", "Dv"]),
    ]
    names = ["query", "key", "value"]
    if with_lengths:
        inputs.append(vi("key_lengths", TP.INT32, ["B"]))
    names.append("key_lengths" if with_lengths else "")
    if with_layout:
        inputs.append(vi("block_indices", TP.INT32, bi_shape or ["Hl", "nqb", "K"]))
        names.append("block_indices")
    else:
        names = names[:3] + (["key_lengths"] if with_lengths else [])
    attrs = dict(pattern.attributes(), plugin_namespace="spattn", plugin_version="1")
    node = helper.make_node("SparseAttention", names, ["output"], domain="spattn", **attrs)
    graph = helper.make_graph([node], "g", inputs, [vi("output", e, ["B", "Hq", "Lq", "Dv"])])
    return helper.make_model(
        graph,
        ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )


def _feed(t):
    if t.dtype == torch.bfloat16:
        return ("bfloat16", t.view(torch.int16).numpy().view(np.uint16))
    return t.numpy()


def test_library_is_built():
    path = runtime.library_path("ort")
    assert path.endswith(runtime.LIBRARY_FILES["ort"])


def test_missing_library_message(monkeypatch):
    monkeypatch.setattr(runtime, "_candidates", lambda name: [])
    with pytest.raises(FileNotFoundError, match="pip install"):
        runtime.library_path("ort")
    with pytest.raises(ValueError):
        runtime.library_path("nope")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_ort_matches_reference(name, dtype):
    pattern = FAMILIES[name]
    layout = pattern.has_layout
    model = _single_node(pattern, dtype, with_lengths=True, with_layout=layout)
    sess = runtime.ort_session(runtime._with_float_outputs(model)[0], intra_op_threads=2)
    for n, (b, hq, hkv, lq, lk) in enumerate(
        [(2, 4, 2, 37, 37), (1, 4, 1, 20, 45), (2, 2, 2, 45, 20), (2, 4, 4, 1, 33)]
    ):
        q, k, v = make_qkv(b, hq, hkv, lq, lk, d=16, dv=8, dtype=dtype, seed=n)
        kl = torch.tensor([lk, lk // 3][:b], dtype=torch.int32)
        feeds = {"query": _feed(q), "key": _feed(k), "value": _feed(v), "key_lengths": kl.numpy()}
        bi = pattern.layout_at(lq, lk)
        if layout:
            feeds["block_indices"] = bi.numpy()
        got = runtime.run_ort(None, feeds, session=sess)["output"]
        want = reference_attention(q, k, v, pattern, key_lengths=kl, block_indices=bi)
        assert_close(got, want, dtype, msg=f"{name} case {n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("hl", [1, 4])
def test_ort_listed_blocks(hl, dtype):
    pattern = Pattern(num_random=1, block_size=8, window_left=1, window_right=1, seed=1)
    lq, lk = 40, 50
    bi = listed_layout(hl, lq, lk, 8, k=3, seed=hl)
    model = _single_node(pattern, dtype, with_lengths=False, with_layout=True)
    q, k, v = make_qkv(2, 4, 2, lq, lk, dtype=dtype)
    out = runtime.run_ort(
        model, {"query": _feed(q), "key": _feed(k), "value": _feed(v), "block_indices": bi.numpy()}
    )["output"]
    assert_close(out, reference_attention(q, k, v, pattern, block_indices=bi), dtype)


def _run_bad(model, **over):
    q, k, v = make_qkv(2, 4, 2, 16, 16)
    feeds = {
        "query": q.numpy(),
        "key": k.numpy(),
        "value": v.numpy(),
        "key_lengths": np.array([16, 3], np.int32),
    }
    feeds.update(over)
    return runtime.run_ort(model, feeds)


@pytest.mark.parametrize(
    "over,name",
    [
        (dict(key_lengths=np.array([17, 3], np.int32)), "key_lengths"),
        (dict(key_lengths=np.array([-1, 3], np.int32)), "key_lengths"),
        (dict(key_lengths=np.array([16], np.int32)), "key_lengths"),
        (
            dict(
                key=np.zeros((2, 3, 16, 16), np.float32), value=np.zeros((2, 3, 16, 16), np.float32)
            ),
            "query",
        ),
        (dict(value=np.zeros((2, 2, 15, 16), np.float32)), "value"),
        (dict(key=np.zeros((2, 2, 16, 8), np.float32)), "key"),
    ],
)
def test_ort_bad_inputs_name_the_input(over, name):
    model = _single_node(Pattern.sliding_window(2), torch.float32, True, False)
    with pytest.raises(Exception, match=name):
        _run_bad(model, **over)


def test_ort_bad_block_indices():
    pattern = Pattern.block_layout([[[0]]], 8)
    model = _single_node(pattern, torch.float32, False, True)
    q, k, v = make_qkv(1, 2, 2, 16, 16)
    base = {"query": q.numpy(), "key": k.numpy(), "value": v.numpy()}
    for bad in (
        np.array([[[0], [2]]], np.int32),
        np.array([[[0], [-2]]], np.int32),
        np.zeros((1, 3, 1), np.int32),
        np.zeros((3, 2, 1), np.int32),
    ):
        with pytest.raises(Exception, match="block_indices"):
            runtime.run_ort(model, {**base, "block_indices": bad})


@pytest.mark.parametrize("dtype", [None, "float16"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_export_validates_with_ort(name, dtype, tmp_path):
    model, args = SAMPLES[name]()
    other = SAMPLES[name](seq_len=77, batch=3, seed=1)[1]
    report = spattn.export(
        model, args, tmp_path / "m.onnx", dtype=dtype, validation_inputs=[other], intra_op_threads=2
    )
    assert report.passed, report.summary()
    assert len(report.errors) == 2
    assert onnx.load(str(tmp_path / "m.onnx")).ir_version <= 10


def test_runtime_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, spattn, spattn.runtime as r; r.library_path('ort'); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(spattn.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
