"""The ``spattn::sparse_attention`` torch custom op and its ONNX translation.

``torch.ops.spattn.sparse_attention`` has a fake implementation (torch.export, torch.compile), an
eager implementation (the reference for small sizes, else the block-sparse path) and an ONNX
translation that emits exactly one ``spattn::SparseAttention`` node (domain ``spattn``, version 1).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from . import attributes, blocksparse, checks, reference, schema

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "VERSION",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "sparse_attention_op",
    "onnx_translation",
    "custom_translation_table",
]

DOMAIN = "spattn"
OP_TYPE = "SparseAttention"
VERSION = 1
PLUGIN_NAMESPACE = "spattn"
PLUGIN_VERSION = "1"

schema.register()  # onnxscript looks the op up when translating

# Below this many score elements the eager op runs the dense reference (faster for tiny inputs).
_REFERENCE_MAX_SCORES = 1 << 20

_PARAMS = attributes.TORCH_PARAMS
_NAMES = tuple(p.name for p in _PARAMS)
_DEFAULTS = {
    p.name: (p.default if isinstance(p, attributes.Attribute) else None)
    for p in _PARAMS
    if not (isinstance(p, attributes.Input) and p.required)
}
_TORCH_TYPES = {"INT": "int", "FLOAT": "float"}


def _torch_schema() -> str:
    """The op's torch schema, from the table: inputs as tensors, pattern attributes as scalars."""
    parts = []
    for p in _PARAMS:
        if isinstance(p, attributes.Input):
            parts.append(f"Tensor {p.name}" if p.required else f"Tensor? {p.name}=None")
        else:
            parts.append(f"{_TORCH_TYPES[p.onnx_type]} {p.name}={p.default!r}")
    return "(" + ", ".join(parts) + ") -> Tensor"


def _bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by name, defaults filled (the dispatcher passes only the ones given)."""
    if len(args) > len(_NAMES):
        raise TypeError(f"spattn::sparse_attention takes {len(_NAMES)} arguments, got {len(args)}")
    out = dict(_DEFAULTS)
    out.update(zip(_NAMES, args, strict=False))
    for name, value in kwargs.items():
        if name not in out and name not in _NAMES:
            raise TypeError(f"spattn::sparse_attention: unknown argument {name!r}")
        out[name] = value
    return out


def _check(a: dict[str, Any]) -> None:
    """The call's inputs and attributes as docs/op-spec.md's error table (values when eager)."""
    checks.check_op_call(
        a["query"],
        a["key"],
        a["value"],
        {x.name: a[x.name] for x in attributes.PATTERN_ATTRIBUTES},
        a["key_lengths"],
        a["block_indices"],
        a["global_mask"],
        a["key_starts"],
        a["sinks"],
    )


def _eager(*args: Any, **kwargs: Any) -> torch.Tensor:
    a = _bind(args, kwargs)
    _check(a)
    q, k, v = a["query"], a["key"], a["value"]
    attrs = {x.name: a[x.name] for x in attributes.PATTERN_ATTRIBUTES}
    scale = attrs.pop("scale")
    sc = None if scale == 0.0 else float(scale)
    extra = {
        name: a[name] for name in ("global_mask", "key_starts", "sinks") if a[name] is not None
    }
    b, hq, lq, _ = q.shape
    if b * hq * lq * k.shape[2] <= _REFERENCE_MAX_SCORES:
        out = reference.reference_attention(
            q, k, v, attrs, a["key_lengths"], a["block_indices"], sc, **extra
        )
        return out.to(q.dtype)
    return blocksparse.block_sparse_attention(
        q, k, v, attrs, a["key_lengths"], a["block_indices"], sc, **extra
    )


def _fake(*args: Any, **kwargs: Any) -> torch.Tensor:
    a = _bind(args, kwargs)
    _check(a)
    q, v = a["query"], a["value"]
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))


_eager.__doc__ = """One ``spattn::SparseAttention`` call; arguments in the order of the table.

Inputs first (``query, key, value, key_lengths, block_indices``), then the pattern attributes
(``window_left ... seed, scale, softcap``; scale 0: default), then the inputs added later
(``global_mask, key_starts, sinks``).

Examples
--------
>>> q = torch.randn(1, 2, 16, 8)
>>> torch.ops.spattn.sparse_attention(q, q, q, None, None, 2, 2).shape
torch.Size([1, 2, 16, 8])
"""

sparse_attention_op = torch.library.custom_op(
    "spattn::sparse_attention", _eager, mutates_args=(), schema=_torch_schema()
)
sparse_attention_op.register_fake(_fake)


def _translate(*args: Any, **kwargs: Any) -> Any:
    from onnxscript.values import Opset

    a = _TRANSLATION_SIGNATURE.bind(*args, **kwargs)
    a.apply_defaults()
    values = a.arguments
    spattn = Opset(DOMAIN, VERSION)
    # The attribute values are constants of the trace: a bad one never reaches a written node.
    checks.check_attributes({x.name: values[x.name] for x in attributes.PATTERN_ATTRIBUTES})
    attrs: dict[str, Any] = {}
    for x in attributes.ATTRIBUTES:
        if not x.pattern:
            attrs[x.name] = x.export_value
            continue
        value = x.python_type(values[x.name])
        if x.always_written or value != x.default:
            attrs[x.name] = value
    inputs = [values[i.name] for i in attributes.INPUTS]
    while inputs[-1] is None:
        inputs.pop()
    # onnxscript writes an absent (None) input before a present one as the empty name "".
    return spattn.SparseAttention(*inputs, **attrs)


_TRANSLATION_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter(
            p.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=(
                inspect.Parameter.empty
                if isinstance(p, attributes.Input) and p.required
                else _DEFAULTS[p.name]
            ),
        )
        for p in _PARAMS
    ]
)


def _make_translation() -> Any:
    def onnx_translation(*args: Any, **kwargs: Any) -> Any:
        return _translate(*args, **kwargs)

    onnx_translation.__signature__ = _TRANSLATION_SIGNATURE  # type: ignore[attr-defined]
    # Attribute parameters are told apart from inputs by their annotation (int, float).
    onnx_translation.__annotations__ = {
        p.name: attributes.attribute(p.name).python_type
        for p in _PARAMS
        if isinstance(p, attributes.Attribute)
    }
    onnx_translation.__doc__ = """ONNX translation of ``spattn::sparse_attention`` for
    ``torch.onnx.export(dynamo=True)``.

    Emits one ``spattn::SparseAttention`` node: the attributes the table marks always written,
    the others (``scale``, ``softcap``) only when they differ from their defaults, and
    ``plugin_namespace``/``plugin_version`` for TensorRT's ONNX parser. Inputs keep their
    positions: trailing absent inputs are dropped, an absent input before a present one becomes
    the empty name ``""``.

    Examples
    --------
    >>> table = custom_translation_table()  # doctest: +SKIP
    >>> torch.onnx.export(model, args, dynamo=True,
    ...                   custom_translation_table=table)  # doctest: +SKIP
    """
    return onnx_translation


onnx_translation = _make_translation()


def custom_translation_table() -> dict[Any, Any]:
    """``{torch.ops.spattn.sparse_attention.default: onnx_translation}`` for torch.onnx.export.

    Examples
    --------
    >>> len(custom_translation_table())
    1
    """
    return {torch.ops.spattn.sparse_attention.default: onnx_translation}
