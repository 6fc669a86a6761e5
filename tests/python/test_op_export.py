"""The torch custom op (torch.export, torch.compile) and its ONNX export: one node per
attention, attributes round-trip to the Pattern, dynamic axes, optional inputs."""

from __future__ import annotations

import onnx
import pytest
import torch
from conftest import FAMILIES, make_qkv

import spattn
from spattn import Pattern, sparse_attention
from spattn.export import check_model, node_attributes, spattn_nodes
from spattn.models import SAMPLES
from spattn.op import custom_translation_table
from spattn.reference import reference_attention
from spattn.tolerances import assert_close


class Attn(torch.nn.Module):
    def __init__(self, pattern, with_lengths=False):
        super().__init__()
        self.pattern, self.with_lengths = pattern, with_lengths

    def forward(self, q, k, v, key_lengths=None):
        return sparse_attention(q, k, v, self.pattern, key_lengths=key_lengths, impl="op")


class TwoLayers(torch.nn.Module):
    def __init__(self, p1, p2):
        super().__init__()
        self.p1, self.p2 = p1, p2

    def forward(self, q, k, v):
        x = sparse_attention(q, k, v, self.p1)
        return sparse_attention(x, k, v, self.p2)


def _export(model, args, dynamic_shapes=None):
    prog = torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=18,
        custom_translation_table=custom_translation_table(),
        dynamic_shapes=dynamic_shapes,
        verbose=False,
    )
    return prog.model_proto


def test_eager_op_matches_reference():
    q, k, v = make_qkv(2, 4, 2, 33, 33)
    p = FAMILIES["mixed"]
    kl = torch.tensor([33, 20])
    want = reference_attention(q, k, v, p, key_lengths=kl)
    assert_close(sparse_attention(q, k, v, p, key_lengths=kl, impl="op"), want, torch.float32)
    q, k, v = make_qkv(1, 4, 2, 1100, 1100)  # large: the block-sparse path
    p = Pattern.longformer(16, 2)
    assert_close(
        torch.ops.spattn.sparse_attention(q, k, v, None, None, 8, 8, 0, 2),
        reference_attention(q, k, v, p),
        torch.float32,
    )


def test_torch_export_and_compile():
    q, k, v = make_qkv(2, 4, 2, 24, 24)
    m = Attn(Pattern.bigbird(8))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2)
    ep = torch.export.export(
        m, (q, k, v), dynamic_shapes=({0: batch, 2: seq}, {0: batch, 2: seq}, {0: batch, 2: seq})
    )
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.spattn.sparse_attention.default) == 1
    q2, k2, v2 = make_qkv(3, 4, 2, 40, 40)
    assert_close(ep.module()(q2, k2, v2), reference_attention(q2, k2, v2, m.pattern), torch.float32)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    assert_close(compiled(q, k, v), reference_attention(q, k, v, m.pattern), torch.float32)


@pytest.mark.parametrize(
    "name", ["sliding_window", "longformer", "bigbird", "strided", "mixed", "dense"]
)
def test_onnx_export_one_node_with_attributes(name):
    p = FAMILIES[name]
    q, k, v = make_qkv(2, 4, 2, 24, 24)
    kl = torch.tensor([24, 10], dtype=torch.int32)
    proto = _export(Attn(p), (q, k, v, kl))
    nodes = spattn_nodes(proto)
    assert len(nodes) == 1
    assert [n for n in proto.graph.node if n.domain not in ("", "spattn")] == []
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("spattn", 1)}
    attrs = node_attributes(nodes[0])
    assert attrs.pop("plugin_namespace") == b"spattn"
    assert attrs.pop("plugin_version") == b"1"
    back = Pattern.from_attributes(attrs)
    assert back.replace(scale=None) == p.replace(scale=None)
    assert back.scale == pytest.approx(p.scale, rel=1e-7) if p.scale else back.scale is None
    assert list(nodes[0].input)[3] != "" and len(nodes[0].input) == 4
    check_model(proto)


def test_onnx_export_block_indices_without_key_lengths():
    bi = torch.tensor([[[0, -1], [1, 0], [2, -1]]], dtype=torch.int32)
    p = Pattern.block_layout(bi, 8)
    q, k, v = make_qkv(1, 2, 2, 24, 24)
    proto = _export(Attn(p), (q, k, v))
    (node,) = spattn_nodes(proto)
    assert len(node.input) == 5 and node.input[3] == ""
    init = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    const = {
        n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in proto.graph.node
        if n.op_type == "Constant"
    }
    arr = {**init, **const}[node.input[4]]
    assert arr.dtype.name == "int32" and arr.tolist() == bi.tolist()
    check_model(proto)


def test_onnx_export_two_attentions_dynamic_axes():
    q, k, v = make_qkv(2, 4, 4, 20, 20)
    m = TwoLayers(Pattern.sliding_window(3), Pattern.causal_sliding_window(4))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2)
    ds = ({0: batch, 2: seq}, {0: batch, 2: seq}, {0: batch, 2: seq})
    proto = _export(m, (q, k, v), ds)
    assert len(spattn_nodes(proto)) == 2
    inferred = check_model(proto)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and dims[1].dim_value == 4


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_models_export(name, tmp_path):
    model, args = SAMPLES[name]()
    report = spattn.export(model, args, tmp_path / f"{name}.onnx", validate=False)
    # the encoders (longformer_encoder, longformer_base) have 2 layers, the decoder block 1
    assert report.num_spattn_nodes == (1 if name == "gqa_decoder_block" else 2)
    proto = onnx.load(str(tmp_path / f"{name}.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and sequence
    for n in report.nodes:
        assert n["attributes"]["plugin_namespace"] == "spattn"
