"""``sparse_attention``: one entry point over the reference, block-sparse and custom-op paths."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import blocksparse, reference

__all__ = ["sparse_attention"]

_IMPLS = ("auto", "reference", "blocksparse", "op")


def _is_tracing() -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    try:
        from torch.fx.experimental.proxy_tensor import get_proxy_mode

        return get_proxy_mode() is not None
    except Exception:  # pragma: no cover - private API moved
        return False


def _int32(x: Any, device: torch.device) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    return x.to(device=device, dtype=torch.int32)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    key_lengths: Any = None,
    block_indices: Any = None,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Sparse attention with the semantics of ``spattn::SparseAttention`` (docs/op-spec.md).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``[B, Hq, Lq, D]``, ``[B, Hkv, Lk, D]``, ``[B, Hkv, Lk, Dv]``; ``Hq % Hkv == 0``.
    pattern : Pattern
        The sparsity pattern (the node's attributes).
    key_lengths : tensor-like, optional
        ``[B]`` number of valid (non-padding) keys per batch.
    block_indices : tensor-like, optional
        ``[Hl, ceil(Lq / block_size), K]`` listed key blocks; defaults to the pattern's layout.
    scale : float, optional
        Overrides ``pattern.scale``; default ``1/sqrt(D)``.
    impl : {"auto", "reference", "blocksparse", "op"}
        ``"op"`` calls ``torch.ops.spattn.sparse_attention`` (what torch.export and ONNX export
        see); ``"reference"`` is the dense-mask float32 oracle (differentiable);
        ``"blocksparse"`` the memory-efficient path. ``"auto"`` uses the op, or the reference when
        gradients are needed outside of tracing.

    Returns
    -------
    torch.Tensor
        ``[B, Hq, Lq, Dv]`` in ``q.dtype``.

    Examples
    --------
    >>> from spattn import Pattern
    >>> q = torch.randn(2, 4, 128, 32)
    >>> k = v = torch.randn(2, 2, 128, 32)
    >>> sparse_attention(q, k, v, Pattern.causal_sliding_window(16)).shape
    torch.Size([2, 4, 128, 32])
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl: expected one of {_IMPLS}, got {impl!r}")
    if block_indices is None and getattr(pattern, "block_indices", None) is not None:
        block_indices = pattern.layout_at(int(q.shape[2]), int(k.shape[2]))
    if impl == "auto":
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        impl = "reference" if needs_grad and not _is_tracing() else "op"
    if impl == "reference":
        out = reference.reference_attention(q, k, v, pattern, key_lengths, block_indices, scale)
        return out.to(q.dtype)
    if impl == "blocksparse":
        return blocksparse.block_sparse_attention(
            q, k, v, pattern, key_lengths, block_indices, scale
        )
    from . import op  # noqa: F401 - registers torch.ops.spattn.sparse_attention

    f = reference.pattern_fields(pattern)
    if scale is None:
        scale = getattr(pattern, "scale", None)
    return torch.ops.spattn.sparse_attention(
        q,
        k,
        v,
        _int32(key_lengths, q.device),
        _int32(block_indices, q.device),
        f["window_left"],
        f["window_right"],
        f["causal"],
        f["num_global"],
        f["stride"],
        f["block_size"],
        f["num_random"],
        f["seed"],
        float(scale) if scale is not None else 0.0,
    )
