"""Longformer's self-attention as two ``spattn::SparseAttention`` calls, exactly as HF computes it.

HF (``LongformerSelfAttention``, eval): every query attends, with the ``query``/``key``/``value``
projections, to the keys within ``|i - j| <= attention_window / 2`` and to every global key
(``global_attention_mask``, per input), padding excluded; then the rows of global tokens are
replaced by attention with the separate ``query_global``/``key_global``/``value_global``
projections over every non-padding key; padding rows are zero.

Call 1: the band ``window_left = window_right = w/2`` with the op's ``global_mask`` input (global
keys attended by everyone). Call 2: the global projections, the same ``global_mask`` and no band
(local off): a global row attends to every valid key; the other rows (global keys only) are
discarded. The result takes call 2's rows where the token is global, call 1's elsewhere, both
linear in the length.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from ..functional import sparse_attention
from ..patterns import Pattern
from .attention import padding_inputs

__all__ = ["convert_longformer"]


def _forward(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    is_index_masked: torch.Tensor | None = None,
    is_index_global_attn: torch.Tensor | None = None,
    is_global_attn: Any = None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor]:
    if output_attentions:
        raise NotImplementedError("output_attentions: spattn never materialises attention weights")
    b, n, _ = hidden_states.shape
    h, d = self.num_heads, self.head_dim
    if attention_mask is None:
        raise ValueError("attention_mask: Longformer's layer mask (-inf pad, 0 local, +inf global)")
    masked = is_index_masked if is_index_masked is not None else attention_mask < 0
    is_global = is_index_global_attn if is_index_global_attn is not None else attention_mask > 0

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, n, h, d).transpose(1, 2)

    key_starts, key_lengths = padding_inputs(~masked, n, b)
    extra: dict[str, Any] = {"key_starts": key_starts} if key_starts is not None else {}
    gmask = is_global.to(torch.int32)
    w = int(self.one_sided_attn_window_size)
    scale = float(d) ** -0.5
    local = sparse_attention(
        heads(self.query(hidden_states)),
        heads(self.key(hidden_states)),
        heads(self.value(hidden_states)),
        Pattern(window_left=w, window_right=w, scale=scale),
        key_lengths=key_lengths,
        global_mask=gmask,
        **extra,
    )
    glob = sparse_attention(
        heads(self.query_global(hidden_states)),
        heads(self.key_global(hidden_states)),
        heads(self.value_global(hidden_states)),
        Pattern(scale=scale),
        key_lengths=key_lengths,
        global_mask=gmask,
        **extra,
    )
    out = torch.where(is_global[:, None, :, None], glob, local)
    out = out.masked_fill(masked[:, None, :, None], 0.0)
    return (out.transpose(1, 2).reshape(b, n, h * d),)


def convert_longformer(model: nn.Module) -> int:
    """Replace every ``LongformerSelfAttention.forward`` (in place); returns how many."""
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    n = 0
    for m in model.modules():
        if isinstance(m, LongformerSelfAttention):
            m.forward = types.MethodType(_forward, m)  # type: ignore[method-assign]
            n += 1
    return n
