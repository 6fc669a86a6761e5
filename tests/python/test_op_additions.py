"""The op's additions on the Python side: global_mask (input 5), key_starts (input 6), sinks
(input 7) and softcap: schema inference and its errors, the PyTorch entry point's validation, the
ONNX export (positions, "" for absent inputs, softcap only when set) and old models unchanged."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from conftest import make_qkv
from onnx import TensorProto as TP
from onnx import helper

from spattn import Pattern, SparseMultiheadAttention, schema, sparse_attention
from spattn.export import check_model, node_attributes, spattn_nodes
from spattn.functional import key_range_from_padding_mask
from spattn.op import custom_translation_table

# ------------------------------------------------------------------ schema


def _model(inputs=(), attrs=None, q=("B", 4, "L", 16), k=("B", 2, "L", 16), v=("B", 2, "L", 8)):
    """A one-node model; ``inputs`` lists (position, name, elem, shape) of the optional inputs."""
    vi = helper.make_tensor_value_info
    graph_inputs = [vi("q", TP.FLOAT, q), vi("k", TP.FLOAT, k), vi("v", TP.FLOAT, v)]
    names = ["q", "k", "v"]
    for pos, name, elem, shape in sorted(inputs):
        names += [""] * (pos - len(names))
        names.append(name)
        graph_inputs.append(vi(name, elem, shape))
    node = helper.make_node("SparseAttention", names, ["o"], domain="spattn", **(attrs or {}))
    graph = helper.make_graph([node], "g", graph_inputs, [vi("o", TP.FLOAT, ("B", "H", "L", "D"))])
    return helper.make_model(
        graph,
        ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )


def _infer(m):
    schema.register()
    onnx.checker.check_model(m, full_check=True, check_custom_domain=True)
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


GM = (5, "gm", TP.INT32, ("B", "L"))
KS = (6, "ks", TP.INT32, ("B",))
SK = (7, "sk", TP.FLOAT, (4,))


@pytest.mark.parametrize(
    "inputs",
    [
        [GM],
        [KS],
        [SK],
        [GM, KS],
        [GM, SK],
        [KS, SK],
        [GM, KS, SK],
        [(3, "kl", TP.INT32, ("B",)), SK],
    ],
)
def test_schema_accepts_new_inputs(inputs):
    m = _model(inputs, attrs=dict(softcap=50.0, window_left=2))
    out = _infer(m).graph.output[0].type.tensor_type
    assert [d.dim_param or d.dim_value for d in out.shape.dim] == ["B", 4, "L", 8]
    assert len(m.graph.node[0].input) == max(p for p, *_ in inputs) + 1


def test_schema_static_shapes_of_new_inputs():
    q, k, v = (2, 4, 5, 16), (2, 2, 9, 16), (2, 2, 9, 8)
    ins = [(5, "gm", TP.INT32, (2, 9)), (6, "ks", TP.INT32, (2,)), (7, "sk", TP.FLOAT, (4,))]
    out = _infer(_model(ins, q=q, k=k, v=v)).graph.output[0].type.tensor_type
    assert [d.dim_value for d in out.shape.dim] == [2, 4, 5, 8]


@pytest.mark.parametrize(
    "inputs,attrs,match",
    [
        ([(5, "gm", TP.FLOAT, ("B", "L"))], None, "global_mask: expected int32, got float32"),
        ([(5, "gm", TP.INT64, ("B", "L"))], None, "global_mask: expected int32, got int64"),
        ([(5, "gm", TP.INT32, ("B",))], None, "global_mask: expected rank 2"),
        ([(5, "gm", TP.INT32, (2, 7))], None, "global_mask: .*dim 1 \\(Lk\\) = 9"),
        ([(5, "gm", TP.INT32, (4, 9))], None, "global_mask: .*dim 0 \\(B\\) = 2"),
        ([(6, "ks", TP.INT64, ("B",))], None, "key_starts: expected int32"),
        ([(6, "ks", TP.INT32, ("B", 1))], None, "key_starts: expected rank 1"),
        ([(6, "ks", TP.INT32, (3,))], None, "key_starts: .*dim 0 \\(B\\) = 2"),
        ([(7, "sk", TP.FLOAT16, (4,))], None, "sinks: expected float32, got float16"),
        ([(7, "sk", TP.INT32, (4,))], None, "sinks: expected float32"),
        ([(7, "sk", TP.FLOAT, (2,))], None, "sinks: .*dim 0 \\(Hq\\) = 4"),
        ([(7, "sk", TP.FLOAT, (4, 1))], None, "sinks: expected rank 1"),
        ([(8, "x", TP.FLOAT, (4,))], None, "input size 9 not in range|input 8"),
        ([], dict(softcap=-1.0), "softcap: expected finite and >= 0"),
        ([], dict(softcap=math.nan), "softcap: expected finite"),
        ([], dict(softcap=math.inf), "softcap: expected finite"),
        ([], dict(softcap=3), "softcap.*(FLOAT.*INT)"),
        ([], dict(window_left="2"), "window_left.*(INT.*STRING)"),
        ([], dict(window_left=[2]), "window_left.*(INT.*INTS)"),
        ([], dict(block_size=0), "block_size: expected in 1 ... 65536, got 0"),
        ([], dict(seed=-5), "seed: expected"),
        ([], dict(causal=2), "causal: expected 0 or 1"),
        ([], dict(scale=-0.5), "scale: expected finite and > 0"),
        ([], dict(plugin_version="2"), "plugin_version: expected"),
    ],
)
def test_schema_errors_name_the_input(inputs, attrs, match):
    static = dict(q=(2, 4, 5, 16), k=(2, 2, 9, 16), v=(2, 2, 9, 8))
    m = _model(inputs, attrs=attrs, **static)
    with pytest.raises(
        (onnx.checker.ValidationError, onnx.shape_inference.InferenceError), match=match
    ):
        _infer(m)
    # Shape inference alone (no checker first) names the input or attribute too.
    with pytest.raises(onnx.shape_inference.InferenceError, match=match):
        onnx.shape_inference.infer_shapes(m, strict_mode=True)


# ------------------------------------------------------------------ validation


Q, K, V = make_qkv(2, 4, 2, 16, 16, d=8)
P = Pattern.sliding_window(3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(key_lengths=torch.tensor([17, 3])),
            r"key_lengths: expected values in \[0, Lk = 16\]",
        ),
        (
            dict(key_lengths=[-1, 3]),
            r"key_lengths: expected values in \[0, Lk = 16\], got -1 at b=0",
        ),
        (dict(key_lengths=[3]), r"key_lengths: expected shape \[B\] = \[2\]"),
        (dict(key_lengths=torch.tensor([1.0, 2.0])), "key_lengths: expected an integer"),
        (
            dict(key_lengths=torch.tensor([2**40, 1])),
            "key_lengths: expected values that fit in int32",
        ),
        (
            dict(key_lengths=[5, 5], key_starts=[6, 0]),
            r"key_starts: .*key_lengths\[b\] = 5.*6 at b=0",
        ),
        (dict(key_starts=[0, 17]), r"key_starts: expected values in \[0, Lk = 16\], got 17 at b=1"),
        (dict(key_starts=[-1, 0]), "key_starts: expected values in"),
        (
            dict(key_starts=torch.zeros(2, 1, dtype=torch.int32)),
            r"key_starts: expected shape \[B\]",
        ),
        (dict(key_starts=torch.zeros(2)), "key_starts: expected an integer"),
        (dict(global_mask=torch.zeros(2, 15, dtype=torch.int32)), r"global_mask: .*\[2, 16\]"),
        (dict(global_mask=torch.zeros(1, 16, dtype=torch.int32)), r"global_mask: .*\[2, 16\]"),
        (dict(global_mask=torch.zeros(2, 16)), "global_mask: expected an integer or bool"),
        (
            dict(sinks=torch.tensor([0.0, math.nan, 0.0, 0.0])),
            "sinks: expected no NaN or \\+inf.*nan at h=1",
        ),
        (dict(sinks=torch.tensor([0.0, 0.0, math.inf, 0.0])), r"sinks: .*inf at h=2"),
        (dict(sinks=torch.zeros(2)), r"sinks: expected shape \[Hq\] = \[4\]"),
        (dict(sinks=torch.zeros(4, dtype=torch.int32)), "sinks: expected a floating-point"),
        (dict(block_indices=torch.tensor([[[5]]])), r"block_indices: expected entries in \[-1"),
        (dict(block_indices=torch.tensor([[[-2]]])), r"block_indices: .*-2 at \[0, 0, 0\]"),
        (
            dict(block_indices=torch.zeros(3, 1, 1, dtype=torch.int32)),
            "block_indices: expected shape",
        ),
        (dict(block_indices=torch.zeros(1, 1, 1)), "block_indices: expected an integer"),
        (dict(scale=-1.0), "scale: expected finite and > 0"),
        (dict(scale=math.nan), "scale: expected finite"),
        (dict(scale="x"), "scale: expected a number"),
        (dict(impl="fast"), "impl: expected one of"),
    ],
)
def test_sparse_attention_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match="sparse_attention: " + match):
        sparse_attention(Q, K, V, P, **kwargs)


@pytest.mark.parametrize(
    "args,match",
    [
        ((Q.long(), K.long(), V.long()), "query: expected dtype float32, float16 or bfloat16"),
        ((Q.double(), K.double(), V.double()), "query: expected dtype"),
        ((Q, K.half(), V), "key: expected the dtype of query"),
        ((Q, K, V.bfloat16()), "value: expected the dtype of query"),
        ((Q[0], K, V), "query: expected a rank-4 tensor"),
        ((Q, K[0], V), "key: expected a rank-4 tensor"),
        ((Q[:, :, :0], K, V), "query: expected every dimension >= 1"),
        ((Q[:, :3], K, V), "query: expected heads Hq a multiple of key heads Hkv = 2"),
        ((Q, K[:1], V), "key: expected batch 2"),
        ((Q, K, V[:, :1]), "value: expected 2 heads"),
        ((Q, K[..., :4], V), "key: expected head dim 8"),
        ((Q, K, V[:, :, :5]), "value: expected length 16"),
        ((Q.numpy(), K, V), "query: expected a torch.Tensor"),
    ],
)
def test_sparse_attention_rejects_bad_qkv(args, match):
    with pytest.raises(ValueError, match="sparse_attention: " + match):
        sparse_attention(*args, P)


def test_sparse_attention_rejects_bad_pattern():
    with pytest.raises(ValueError, match="pattern: expected a spattn.Pattern"):
        sparse_attention(Q, K, V, "dense")
    with pytest.raises(ValueError, match="Pattern: block_size"):
        sparse_attention(Q, K, V, {"block_size": 1.5})


# ------------------------------------------------------------------ padding masks


def test_key_range_from_masks_left_right_none_empty():
    m = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    s, n = key_range_from_padding_mask(attention_mask=m)
    assert s.dtype == n.dtype == torch.int32
    assert s.tolist() == [2, 0, 0, 0] and n.tolist() == [5, 3, 5, 0]
    s2, n2 = key_range_from_padding_mask(key_padding_mask=m == 0)
    assert torch.equal(s, s2) and torch.equal(n, n2)
    additive = torch.where(m == 0, float("-inf"), 0.0)
    s3, n3 = key_range_from_padding_mask(key_padding_mask=additive)
    assert torch.equal(s, s3) and torch.equal(n, n3)


@pytest.mark.parametrize("row", [[1, 0, 1], [0, 1, 0, 1], [1, 1, 0, 0, 1]])
def test_key_range_rejects_holes(row):
    with pytest.raises(ValueError, match="attention_mask: .*one contiguous run.*holes in row 1"):
        key_range_from_padding_mask(attention_mask=torch.tensor([[1] * len(row), row]))
    with pytest.raises(ValueError, match="key_padding_mask: .*holes in row 0"):
        key_range_from_padding_mask(key_padding_mask=torch.tensor([row]) == 0)


class _Range(torch.nn.Module):
    def forward(self, mask):
        return key_range_from_padding_mask(attention_mask=mask)


def test_traced_mask_conversion_marks_holes_invalid():
    """Traced, a holey row becomes key_starts = key_lengths + 1: the op rejects it at run time."""
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    ep = torch.export.export(_Range(), (mask,))
    s, n = ep.module()(torch.tensor([[1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]]))
    assert s.tolist() == [5, 2, 5] and n.tolist() == [4, 4, 4]
    assert bool((s > n)[0]) and bool((s > n)[2]) and not bool((s > n)[1])


def test_layer_padding_arguments_are_exclusive():
    m = SparseMultiheadAttention(16, 2, Pattern.dense()).eval()
    x = torch.randn(1, 4, 16)
    pad = torch.tensor([[False, False, False, True]])
    with pytest.raises(ValueError, match="key_padding_mask: expected alone"):
        m(x, key_padding_mask=pad, key_lengths=torch.tensor([3]))
    with pytest.raises(ValueError, match="key_padding_mask: expected alone"):
        m(x, key_padding_mask=pad, attention_mask=~pad)
    with pytest.raises(ValueError, match="num_kv_heads: expected an integer >= 1"):
        SparseMultiheadAttention(16, 2, Pattern.dense(), num_kv_heads=0)
    with pytest.raises(ValueError, match="pattern: expected a spattn.Pattern"):
        SparseMultiheadAttention(16, 2, "dense")
    s = SparseMultiheadAttention(16, 2, Pattern.dense(), sinks=True, dtype=torch.float16)
    assert s.sinks is not None and s.sinks.dtype == torch.float32 and s.sinks.shape == (2,)
    assert "sinks" in dict(s.named_parameters())
    assert SparseMultiheadAttention(16, 2, Pattern.dense()).sinks is None


# ------------------------------------------------------------------ export


class Attn(torch.nn.Module):
    def __init__(self, pattern, names):
        super().__init__()
        self.pattern, self.names = pattern, names

    def forward(self, q, k, v, *extra):
        kw = dict(zip(self.names, extra, strict=True))
        return sparse_attention(q, k, v, self.pattern, impl="op", **kw)


def _export(model, args):
    prog = torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=18,
        custom_translation_table=custom_translation_table(),
        verbose=False,
    )
    return prog.model_proto


def _extras(names, b=2, hq=4, lk=16):
    vals = {
        "key_lengths": torch.tensor([16, 11], dtype=torch.int32),
        "block_indices": torch.tensor([[[0], [1]]], dtype=torch.int32),
        "global_mask": (torch.arange(lk) % 5 == 0).to(torch.int32).repeat(b, 1),
        "key_starts": torch.tensor([0, 3], dtype=torch.int32),
        "sinks": torch.linspace(-1, 1, hq),
    }
    return tuple(vals[n] for n in names)


POSITIONS = {"key_lengths": 3, "block_indices": 4, "global_mask": 5, "key_starts": 6, "sinks": 7}


@pytest.mark.parametrize(
    "names",
    [
        ("global_mask",),
        ("key_starts",),
        ("sinks",),
        ("key_lengths", "sinks"),
        ("block_indices", "key_starts"),
        ("global_mask", "key_starts", "sinks"),
        ("key_lengths", "block_indices", "global_mask", "key_starts", "sinks"),
    ],
)
def test_export_writes_new_inputs_at_their_positions(names):
    q, k, v = make_qkv(2, 4, 2, 16, 16, d=8)
    pattern = Pattern(window_left=2, window_right=2, block_size=8)
    proto = _export(Attn(pattern, names), (q, k, v, *_extras(names)))
    check_model(proto)
    (node,) = spattn_nodes(proto)
    graph_inputs = [i.name for i in proto.graph.input]
    want_len = max(POSITIONS[n] for n in names) + 1
    assert len(node.input) == want_len
    for name, pos in POSITIONS.items():
        if pos >= want_len:
            continue
        if name in names:
            assert node.input[pos] == graph_inputs[3 + names.index(name)], (name, node.input)
        else:
            assert node.input[pos] == "", (name, node.input)
    assert "softcap" not in node_attributes(node)


def test_export_softcap_only_when_set():
    q, k, v = make_qkv(1, 2, 2, 8, 8, d=8)
    for softcap, present in ((0.0, False), (30.0, True)):
        proto = _export(Attn(Pattern.dense().replace(softcap=softcap), ()), (q, k, v))
        (node,) = spattn_nodes(proto)
        attrs = node_attributes(node)
        assert ("softcap" in attrs) == present
        if present:
            assert attrs["softcap"] == pytest.approx(30.0)
            a = next(a for a in node.attribute if a.name == "softcap")
            assert a.type == onnx.AttributeProto.FLOAT
        check_model(proto)


def test_old_models_export_unchanged():
    """Without the additions, the node is what version 1 always wrote."""
    q, k, v = make_qkv(2, 4, 2, 16, 16, d=8)
    proto = _export(
        Attn(Pattern.longformer(4, 1), ("key_lengths",)), (q, k, v, *_extras(("key_lengths",)))
    )
    (node,) = spattn_nodes(proto)
    assert len(node.input) == 4
    assert sorted(node_attributes(node)) == sorted(
        [
            "window_left",
            "window_right",
            "causal",
            "num_global",
            "stride",
            "block_size",
            "num_random",
            "seed",
            "plugin_namespace",
            "plugin_version",
        ]
    )


class _Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = SparseMultiheadAttention(
            32, 4, Pattern.longformer(4).replace(softcap=20.0), sinks=True
        )

    def forward(self, x, attention_mask, global_attention_mask):
        return self.attn(
            x, attention_mask=attention_mask, global_attention_mask=global_attention_mask
        )[0]


def test_layer_export_carries_padding_global_mask_sinks_softcap():
    torch.manual_seed(0)
    m = _Layer().eval()
    x = torch.randn(2, 10, 32)
    am = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 7 + [0] * 3])
    gm = torch.zeros(2, 10, dtype=torch.int64)
    gm[:, 4] = 1
    proto = _export(m, (x, am, gm))
    check_model(proto)
    (node,) = spattn_nodes(proto)
    assert len(node.input) == 8
    assert node.input[3] and node.input[5] and node.input[6] and node.input[7]
    assert node.input[4] == ""
    assert node_attributes(node)["softcap"] == pytest.approx(20.0)
    # The sinks are a float32 initializer of the graph (the learned parameter).
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    name = node.input[7]
    while name not in inits and name in producers:
        name = producers[name].input[0]
    assert name in inits
    assert inits[name].data_type == TP.FLOAT
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(inits[name]).shape, (4,))


# ------------------------------------------------------------------ ONNX Runtime


def _ort_run(proto, args):
    from spattn.runtime import run_ort

    feeds = {i.name: a.numpy() for i, a in zip(proto.graph.input, args, strict=True)}
    return next(iter(run_ort(proto, feeds).values()))


def test_exported_padding_mask_with_holes_is_an_error_in_onnx_runtime():
    """The exported conversion never computes something else for a mask with holes: the op
    receives key_starts > key_lengths for that row and ONNX Runtime fails, naming key_starts."""
    torch.manual_seed(0)
    m = _Layer().eval()
    x = torch.randn(2, 10, 32)
    am = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 7 + [0] * 3])
    gm = torch.zeros(2, 10, dtype=torch.int64)
    proto = _export(m, (x, am, gm))
    out = _ort_run(proto, (x, am, gm))
    assert out.shape == (2, 10, 32) and np.isfinite(out).all()
    holes = torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 7 + [0] * 3])
    with pytest.raises(Exception, match="key_starts"):
        _ort_run(proto, (x, holes, gm))
