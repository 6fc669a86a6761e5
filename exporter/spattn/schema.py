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

from . import attributes

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
_ELEM = {"int32": TensorProto.INT32, "float32": TensorProto.FLOAT}
_ONNX_ATTR_TYPES = {
    "INT": onnx.AttributeProto.INT,
    "FLOAT": onnx.AttributeProto.FLOAT,
    "STRING": onnx.AttributeProto.STRING,
}


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


def _elem_name(e: int) -> str:
    name = TensorProto.DataType.Name(e).lower() if e in TensorProto.DataType.values() else str(e)
    return {"float": "float32", "double": "float64"}.get(name, name)


def _check_attributes(ctx: Any) -> None:
    """Every attribute of the table: its ONNX type and its valid values."""
    for a in attributes.ATTRIBUTES:
        proto = ctx.get_attribute(a.name)
        if proto is None:
            continue
        if isinstance(proto, bytes):
            proto = onnx.AttributeProto.FromString(proto)
        want = _ONNX_ATTR_TYPES[a.onnx_type]
        if proto.type != want:
            got = onnx.AttributeProto.AttributeType.Name(proto.type)
            _fail(f"{a.name}: expected a {a.onnx_type} attribute, got {got}")
        value = helper.get_attribute_value(proto)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        why = a.problem(value)
        if why is not None:
            _fail(f"{a.name}: expected {why}, got {value!r}")


def _infer(ctx: Any) -> None:
    """Type and shape inference of SparseAttention (see the module docstring)."""
    inputs = attributes.INPUTS
    n = ctx.get_num_inputs()
    if n > len(inputs):
        _fail(
            f"input {len(inputs)}: no such input (the op takes at most {len(inputs)}: "
            f"{', '.join(i.name for i in inputs)}), got {n} inputs"
        )
    _check_attributes(ctx)
    types = [_input(ctx, i) for i in range(len(inputs))]
    for spec, t in zip(inputs, types, strict=True):
        if spec.required and t is None:
            _fail(f"{spec.name}: required input is missing")
    elem = [t.tensor_type.elem_type if t is not None else 0 for t in types]
    for i in range(3):
        if elem[i] and elem[i] not in _FLOAT_TYPES:
            _fail(
                f"{inputs[i].name}: expected float32, float16 or bfloat16, "
                f"got {_elem_name(elem[i])}"
            )
    for i in (1, 2):
        if elem[i] and elem[0] and elem[i] != elem[0]:
            _fail(
                f"{inputs[i].name}: expected the type of query ({_elem_name(elem[0])}), "
                f"got {_elem_name(elem[i])}"
            )
    for spec, t, e in zip(inputs, types, elem, strict=True):
        if t is not None and spec.dtype != "T" and e and e != _ELEM[spec.dtype]:
            _fail(f"{spec.name}: expected {spec.dtype}, got {_elem_name(e)}")

    shapes = [tensor_dims(t) if t is not None else None for t in types]
    for spec, shape in zip(inputs, shapes, strict=True):
        if shape is not None and len(shape) != spec.rank:
            _fail(
                f"{spec.name}: expected rank {spec.rank} [{', '.join(spec.shape)}], "
                f"got {len(shape)}"
            )
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

    # The symbols of the spec's shapes, bound by query/key/value where their dims are known.
    bound: dict[str, tuple[int, str]] = {}
    for spec, shape in zip(inputs[:3], shapes[:3], strict=True):
        for sym, d in zip(spec.shape, shape or (), strict=False):
            if known(d) and sym not in bound:
                bound[sym] = (d, spec.name)
    for spec, shape in zip(inputs[3:], shapes[3:], strict=True):
        for axis, (sym, d) in enumerate(zip(spec.shape, shape or (), strict=False)):
            if known(d) and sym in bound and bound[sym][0] != d:
                want, src = bound[sym]
                _fail(
                    f"{spec.name}: expected shape [{', '.join(spec.shape)}] with dim {axis} "
                    f"({sym}) = {want} as in {src}, got {d}"
                )
    bi = shapes[attributes.input_index("block_indices")]
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

    Inputs and attributes come from :mod:`.attributes`.

    Examples
    --------
    >>> make_schema().since_version
    1
    """
    P, Opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption
    attrs = []
    for a in attributes.ATTRIBUTES:
        doc = f"{a.meaning}; valid: {a.expect}"
        if a.schema_default:
            attrs.append(OpSchema.Attribute(a.name, helper.make_attribute(a.name, a.default), doc))
        else:
            attrs.append(
                OpSchema.Attribute(
                    a.name, getattr(OpSchema.AttrType, a.onnx_type), doc, required=False
                )
            )
    params = [
        P(
            i.name,
            i.onnx_type,
            f"[{', '.join(i.shape)}] {i.meaning}" + (f"; valid: {i.valid}" if i.valid else ""),
            param_option=Opt.Single if i.required else Opt.Optional,
        )
        for i in attributes.INPUTS
    ]
    head_dims = "; ".join(f"{h.backend}: {h.describe()}" for h in attributes.HEAD_DIMS.values())
    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        VERSION,
        "Fused sparse attention (docs/op-spec.md): local band, global tokens (first G or a "
        "per-token mask), strided, random and listed key blocks, GQA, left and right key "
        "padding, logit softcapping, attention sinks. Head dims: " + head_dims + ".",
        inputs=params,
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
