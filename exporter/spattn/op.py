"""The ``spattn::sparse_attention`` torch custom op and its ONNX translation.

``torch.ops.spattn.sparse_attention`` has a fake implementation (torch.export, torch.compile), an
eager implementation (the reference for small sizes, else the block-sparse path) and an ONNX
translation that emits exactly one ``spattn::SparseAttention`` node (domain ``spattn``, version 1).
"""

from __future__ import annotations

from typing import Any

import torch

from . import blocksparse, reference, schema

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


@torch.library.custom_op("spattn::sparse_attention", mutates_args=())
def sparse_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_lengths: torch.Tensor | None = None,
    block_indices: torch.Tensor | None = None,
    window_left: int = -1,
    window_right: int = -1,
    causal: int = 0,
    num_global: int = 0,
    stride: int = 0,
    block_size: int = 64,
    num_random: int = 0,
    seed: int = 0,
    scale: float = 0.0,
) -> torch.Tensor:
    """One ``spattn::SparseAttention`` call; attributes as in docs/op-spec.md (scale 0: default).

    Examples
    --------
    >>> q = torch.randn(1, 2, 16, 8)
    >>> torch.ops.spattn.sparse_attention(q, q, q, None, None, 2, 2).shape
    torch.Size([1, 2, 16, 8])
    """
    attrs = {
        "window_left": window_left,
        "window_right": window_right,
        "causal": causal,
        "num_global": num_global,
        "stride": stride,
        "block_size": block_size,
        "num_random": num_random,
        "seed": seed,
    }
    b, hq, lq, _ = query.shape
    sc = None if scale == 0.0 else scale
    if b * hq * lq * key.shape[2] <= _REFERENCE_MAX_SCORES:
        out = reference.reference_attention(
            query, key, value, attrs, key_lengths, block_indices, sc
        )
        return out.to(query.dtype)
    return blocksparse.block_sparse_attention(
        query, key, value, attrs, key_lengths, block_indices, sc
    )


@sparse_attention_op.register_fake
def _(
    query,
    key,
    value,
    key_lengths=None,
    block_indices=None,
    window_left=-1,
    window_right=-1,
    causal=0,
    num_global=0,
    stride=0,
    block_size=64,
    num_random=0,
    seed=0,
    scale=0.0,
):
    return query.new_empty((query.shape[0], query.shape[1], query.shape[2], value.shape[3]))


def onnx_translation(
    query: Any,
    key: Any,
    value: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    window_left: int = -1,
    window_right: int = -1,
    causal: int = 0,
    num_global: int = 0,
    stride: int = 0,
    block_size: int = 64,
    num_random: int = 0,
    seed: int = 0,
    scale: float = 0.0,
) -> Any:
    """ONNX translation of ``spattn::sparse_attention`` for ``torch.onnx.export(dynamo=True)``.

    Emits one ``spattn::SparseAttention`` node with every pattern attribute, ``scale`` when
    non-zero, and ``plugin_namespace``/``plugin_version`` for TensorRT's ONNX parser. An absent
    ``key_lengths`` before a present ``block_indices`` becomes the empty input name.

    Examples
    --------
    >>> table = custom_translation_table()  # doctest: +SKIP
    >>> torch.onnx.export(model, args, dynamo=True,
    ...                   custom_translation_table=table)  # doctest: +SKIP
    """
    from onnxscript.values import Opset

    spattn = Opset(DOMAIN, VERSION)
    attrs: dict[str, Any] = {
        "window_left": int(window_left),
        "window_right": int(window_right),
        "causal": int(causal),
        "num_global": int(num_global),
        "stride": int(stride),
        "block_size": int(block_size),
        "num_random": int(num_random),
        "seed": int(seed),
        "plugin_namespace": PLUGIN_NAMESPACE,
        "plugin_version": PLUGIN_VERSION,
    }
    if scale != 0.0:
        attrs["scale"] = float(scale)
    inputs = [query, key, value, key_lengths, block_indices]
    while inputs[-1] is None:
        inputs.pop()
    return spattn.SparseAttention(*inputs, **attrs)


def custom_translation_table() -> dict[Any, Any]:
    """``{torch.ops.spattn.sparse_attention.default: onnx_translation}`` for torch.onnx.export.

    Examples
    --------
    >>> len(custom_translation_table())
    1
    """
    return {torch.ops.spattn.sparse_attention.default: onnx_translation}
