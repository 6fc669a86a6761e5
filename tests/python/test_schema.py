"""The registered ONNX schema: checker and strict shape inference accept good models and
reject bad ones."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from spattn import schema


def _model(
    q=("B", 4, "L", 16),
    k=("B", 2, "L", 16),
    v=("B", 2, "L", 8),
    extra=(),
    attrs=None,
    elem=TP.FLOAT,
):
    vi = helper.make_tensor_value_info
    inputs = [vi("q", elem, q), vi("k", elem, k), vi("v", elem, v)]
    names = ["q", "k", "v"]
    for name, t, s in extra:
        if name:
            inputs.append(helper.make_tensor_value_info(name, t, s))
        names.append(name)
    node = helper.make_node("SparseAttention", names, ["o"], domain="spattn", **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs, [vi("o", elem, ("B", "H", "L", "D"))])
    return helper.make_model(
        graph,
        ir_version=10,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )


def _check(m):
    onnx.checker.check_model(m, full_check=True, check_custom_domain=True)
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def test_register_idempotent():
    schema.register()
    schema.register()
    s = onnx.defs.get_schema("SparseAttention", 1, "spattn")
    assert s.since_version == 1 and s.domain == "spattn"
    assert {a for a in s.attributes} >= {
        "scale",
        "window_left",
        "window_right",
        "causal",
        "num_global",
        "stride",
        "block_size",
        "num_random",
        "seed",
        "plugin_version",
        "plugin_namespace",
    }
    assert [i.name for i in s.inputs] == [
        "query",
        "key",
        "value",
        "key_lengths",
        "block_indices",
        "global_mask",
        "key_starts",
        "sinks",
    ]
    assert "softcap" in s.attributes


@pytest.mark.parametrize("elem", [TP.FLOAT, TP.FLOAT16, TP.BFLOAT16])
def test_good_model_infers_output(elem):
    schema.register()
    m = _model(
        extra=[("", 0, None), ("bi", TP.INT32, (1, 3, 2))],
        elem=elem,
        attrs=dict(
            window_left=3, num_random=1, plugin_namespace="spattn", plugin_version="1", scale=0.25
        ),
    )
    out = _check(m).graph.output[0].type.tensor_type
    assert out.elem_type == elem
    assert [d.dim_param or d.dim_value for d in out.shape.dim] == ["B", 4, "L", 8]


def test_static_shapes_and_key_lengths():
    schema.register()
    m = _model(q=(2, 8, 5, 16), k=(2, 2, 9, 16), v=(2, 2, 9, 32), extra=[("kl", TP.INT32, (2,))])
    out = _check(m).graph.output[0].type.tensor_type
    assert [d.dim_value for d in out.shape.dim] == [2, 8, 5, 32]


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(q=(2, 4, 16)), "query: expected rank 4"),
        (dict(k=("B", 3, "L", 16)), "multiple"),
        (dict(k=("B", 2, "L", 8)), "key: expected head dim"),
        (dict(q=(2, 4, 5, 16), k=(2, 2, 9, 16), v=(2, 2, 7, 8)), "value"),
        (dict(extra=[("kl", TP.INT64, (2,))]), "key_lengths|int32|type"),
        (dict(extra=[("kl", TP.INT32, (2, 1))]), "key_lengths"),
        (dict(extra=[("", 0, None), ("bi", TP.INT32, (3, 2, 2))]), "block_indices"),
        (dict(elem=TP.DOUBLE), "query|type|T"),
    ],
)
def test_bad_models_are_detected(bad, match):
    schema.register()
    with pytest.raises(
        (onnx.checker.ValidationError, onnx.shape_inference.InferenceError), match=match
    ):
        _check(_model(**bad))


def test_unknown_attribute_is_rejected():
    schema.register()
    with pytest.raises(onnx.checker.ValidationError, match="bogus"):
        _check(_model(attrs=dict(bogus=1)))
