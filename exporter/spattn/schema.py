"""ONNX schema of ``spattn::SparseAttention`` version 1, with type and shape inference.

onnx (>= 1.16) accepts schemas built in Python (``onnx.defs.OpSchema`` +
``onnx.defs.register_schema``) and Python type-and-shape inference functions
(``OpSchema.set_type_and_shape_inference_function``, which receives an
``onnx.shape_inference.InferenceContext``). With the schema registered,
``onnx.checker.check_model(model, full_check=True, check_custom_domain=True)`` and
``onnx.shape_inference.infer_shapes(model, strict_mode=True)`` check exported models: input
arity and types, attribute names and types, ranks, the head ratio and the known dims; the output
is ``query.shape[0:3] + value.shape[3:4]`` of ``query``'s type.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper
from onnx.defs import OpSchema

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "VERSION",
    "make_schema",
    "register",
    "is_registered",
    "tensor_dims",
]

DOMAIN = "spattn"
OP_TYPE = "SparseAttention"
VERSION = 1

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}

_INT_ATTRS = (
    ("window_left", -1, "keys up to this many positions before the query; -1 unbounded"),
    ("window_right", -1, "keys up to this many positions after the query; -1 unbounded"),
    ("causal", 0, "1: keys after the query position are never allowed"),
    ("num_global", 0, "the first G positions attend to all keys and are attended by all"),
    ("stride", 0, "Sparse Transformer strided component; 0 off"),
    ("block_size", 64, "block edge for num_random and block_indices, 1 ... 65536"),
    ("num_random", 0, "BigBird random key blocks per query block and query head"),
    ("seed", 0, "seed of the random-block hash, 0 ... 2^31-1"),
)


def _fail(msg: str) -> None:
    raise onnx.shape_inference.InferenceError(f"[ShapeInferenceError] {OP_TYPE}: {msg}")


def tensor_dims(t: onnx.TypeProto) -> list[Any] | None:
    """Dims of a tensor type: ints, symbolic names, None for unknown; None without a shape."""
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[Any] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _input(ctx: Any, index: int) -> onnx.TypeProto | None:
    if index >= ctx.get_num_inputs() or not ctx.has_input(index):
        return None
    t = ctx.get_input_type(index)
    if t is None:
        return None
    if isinstance(t, bytes):
        t = onnx.TypeProto.FromString(t)
    return t


def _infer(ctx: Any) -> None:
    """Type and shape inference of SparseAttention (see the module docstring)."""
    names = ("query", "key", "value", "key_lengths", "block_indices")
    if ctx.get_num_inputs() > 5:
        _fail(f"input 5: reserved position, got {ctx.get_num_inputs()} inputs")
    types = [_input(ctx, i) for i in range(5)]
    for i in range(3):
        if types[i] is None:
            _fail(f"{names[i]}: required input is missing")
    elem = [t.tensor_type.elem_type if t is not None else 0 for t in types]
    for i in range(3):
        if elem[i] and elem[i] not in _FLOAT_TYPES:
            _fail(f"{names[i]}: expected float32, float16 or bfloat16, got elem_type {elem[i]}")
    if elem[1] and elem[0] and elem[1] != elem[0] or elem[2] and elem[0] and elem[2] != elem[0]:
        _fail(f"key/value: expected the type of query, got {elem[1]}/{elem[2]} vs {elem[0]}")
    for i in (3, 4):
        if types[i] is not None and elem[i] and elem[i] != TensorProto.INT32:
            _fail(f"{names[i]}: expected int32, got elem_type {elem[i]}")

    shapes = [tensor_dims(t) if t is not None else None for t in types]
    ranks = {0: 4, 1: 4, 2: 4, 3: 1, 4: 3}
    for i, r in ranks.items():
        if shapes[i] is not None and len(shapes[i]) != r:
            _fail(f"{names[i]}: expected rank {r}, got {len(shapes[i])}")
    q, k, v = shapes[0], shapes[1], shapes[2]

    def known(x: Any) -> bool:
        return isinstance(x, int)

    if q is not None and k is not None:
        if known(q[0]) and known(k[0]) and q[0] != k[0]:
            _fail(f"key: expected batch {q[0]}, got {k[0]}")
        if known(q[1]) and known(k[1]) and k[1] > 0 and q[1] % k[1] != 0:
            _fail(f"query: heads {q[1]} must be a multiple of key heads {k[1]}")
        if known(q[3]) and known(k[3]) and q[3] != k[3]:
            _fail(f"key: expected head dim {q[3]}, got {k[3]}")
    if k is not None and v is not None:
        if known(k[1]) and known(v[1]) and k[1] != v[1]:
            _fail(f"value: expected {k[1]} heads (as key), got {v[1]}")
        if known(k[2]) and known(v[2]) and k[2] != v[2]:
            _fail(f"value: expected length {k[2]} (as key), got {v[2]}")
        if known(k[0]) and known(v[0]) and k[0] != v[0]:
            _fail(f"value: expected batch {k[0]}, got {v[0]}")
    kl = shapes[3]
    if kl is not None and q is not None and known(kl[0]) and known(q[0]) and kl[0] != q[0]:
        _fail(f"key_lengths: expected length {q[0]} (batch), got {kl[0]}")
    bi = shapes[4]
    if bi is not None and q is not None and known(bi[0]) and known(q[1]):
        if bi[0] not in (1, q[1]):
            _fail(f"block_indices: expected shape[0] in {{1, {q[1]}}}, got {bi[0]}")

    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem[0]
    if q is not None:
        dims = list(q[:3]) + [v[3] if v is not None else None]
        shape = out.tensor_type.shape
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    ctx.set_output_type(0, out)


def make_schema() -> OpSchema:
    """Build the ``OpSchema`` of ``spattn::SparseAttention`` version 1 (not registered).

    Examples
    --------
    >>> make_schema().since_version
    1
    """
    P, Opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption
    attrs = [
        OpSchema.Attribute(
            "scale",
            OpSchema.AttrType.FLOAT,
            "multiplies q.k before the softmax; default (and 0.0) 1/sqrt(D)",
            required=False,
        )
    ]
    for name, default, doc in _INT_ATTRS:
        attrs.append(OpSchema.Attribute(name, helper.make_attribute(name, default), doc))
    attrs.append(
        OpSchema.Attribute(
            "plugin_version",
            helper.make_attribute("plugin_version", "1"),
            "read by TensorRT's ONNX parser only; ignored by the op",
        )
    )
    attrs.append(
        OpSchema.Attribute(
            "plugin_namespace",
            helper.make_attribute("plugin_namespace", ""),
            "read by TensorRT's ONNX parser only; the exporter writes 'spattn'",
        )
    )
    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        VERSION,
        "Fused sparse attention (docs/op-spec.md): local band, global tokens, strided, "
        "random and listed key blocks, GQA, key padding.",
        inputs=[
            P("query", "T", "[B, Hq, Lq, D]"),
            P("key", "T", "[B, Hkv, Lk, D]"),
            P("value", "T", "[B, Hkv, Lk, Dv]"),
            P(
                "key_lengths",
                "tensor(int32)",
                "[B] valid keys per batch",
                param_option=Opt.Optional,
            ),
            P(
                "block_indices",
                "tensor(int32)",
                "[Hl, ceil(Lq/block_size), K] listed key blocks",
                param_option=Opt.Optional,
            ),
        ],
        outputs=[P("output", "T", "[B, Hq, Lq, Dv]")],
        type_constraints=[
            (
                "T",
                ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"],
                "query, key, value and output",
            ),
        ],
        attributes=attrs,
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def is_registered() -> bool:
    """True when a ``spattn::SparseAttention`` schema of version 1 is registered.

    Examples
    --------
    >>> register(); is_registered()
    True
    """
    try:
        s = onnx.defs.get_schema(OP_TYPE, VERSION, DOMAIN)
    except onnx.defs.SchemaError:
        return False
    return s.since_version == VERSION


def register() -> None:
    """Register the schema with onnx (idempotent).

    Examples
    --------
    >>> register(); register()
    """
    if not is_registered():
        onnx.defs.register_schema(make_schema())
