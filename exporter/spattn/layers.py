"""``SparseMultiheadAttention`` and the swap of ``nn.MultiheadAttention`` in Transformer layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .functional import _is_tracing, sparse_attention
from .patterns import Pattern

__all__ = ["SparseMultiheadAttention", "swap_attention", "convert_transformer"]


def _lengths_from_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask [B, Lk]`` (True or -inf = padding) -> ``key_lengths [B]`` int32."""
    pad = mask if mask.dtype == torch.bool else mask < 0
    lengths = (~pad).sum(dim=-1).to(torch.int32)
    if not _is_tracing():
        pos = torch.arange(pad.shape[-1], device=pad.device).unsqueeze(0)
        if not torch.equal(pad, pos >= lengths.unsqueeze(1)):
            raise ValueError(
                "key_padding_mask: only right padding (valid keys first) is supported, "
                "as key_lengths"
            )
    return lengths


def _is_causal_mask(mask: torch.Tensor, lq: int, lk: int) -> bool:
    if _is_tracing() or mask.dim() != 2 or tuple(mask.shape) != (lq, lk):
        return False
    i = torch.arange(lq, device=mask.device).view(-1, 1) + (lk - lq)
    j = torch.arange(lk, device=mask.device).view(1, -1)
    blocked = mask if mask.dtype == torch.bool else torch.isneginf(mask)
    if mask.dtype != torch.bool and not torch.all((mask == 0) | blocked):
        return False
    return bool(torch.equal(blocked, j > i))


class SparseMultiheadAttention(nn.Module):
    """Multi-head (and grouped-query) attention with a sparse pattern; swaps for
    ``nn.MultiheadAttention``.

    Parameters
    ----------
    embed_dim : int
        Model width ``E``.
    num_heads : int
        Query heads; ``E % num_heads == 0``.
    pattern : Pattern
        The sparsity pattern.
    num_kv_heads : int, optional
        Key/value heads (GQA); defaults to ``num_heads``.
    bias : bool
        Biases of the projections.
    batch_first : bool
        Inputs are ``[B, L, E]`` (else ``[L, B, E]``).
    kdim, vdim : int, optional
        Key and value input widths (default ``embed_dim``).

    Examples
    --------
    >>> attn = SparseMultiheadAttention(64, 4, Pattern.sliding_window(8), num_kv_heads=2)
    >>> x = torch.randn(2, 100, 64)
    >>> attn(x)[0].shape
    torch.Size([2, 100, 64])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        pattern: Pattern,
        num_kv_heads: int | None = None,
        bias: bool = True,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}"
            )
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.batch_first = batch_first
        self.pattern = pattern
        kv = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(self.kdim, kv, bias=bias, **kw)
        self.v_proj = nn.Linear(self.vdim, kv, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        # Read by nn.TransformerEncoderLayer's fast-path checks: these values keep it on the
        # ordinary path, which calls this module.
        self._qkv_same_embed_dim = False
        self.in_proj_weight = None
        self.in_proj_bias = None

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, pattern: Pattern) -> SparseMultiheadAttention:
        """Build from an ``nn.MultiheadAttention``, copying its weights.

        Examples
        --------
        >>> mha = nn.MultiheadAttention(32, 4, batch_first=True)
        >>> SparseMultiheadAttention.from_mha(mha, Pattern.dense()).num_heads
        4
        """
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "nn.MultiheadAttention with add_bias_kv/add_zero_attn is not supported"
            )
        w = mha.in_proj_weight if mha.in_proj_weight is not None else mha.q_proj_weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            pattern,
            bias=mha.in_proj_bias is not None,
            batch_first=mha.batch_first,
            kdim=mha.kdim,
            vdim=mha.vdim,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3, dim=0)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            new.q_proj.weight.copy_(wq)
            new.k_proj.weight.copy_(wk)
            new.v_proj.weight.copy_(wv)
            if mha.in_proj_bias is not None:
                bq, bk, bv = mha.in_proj_bias.chunk(3, dim=0)
                new.q_proj.bias.copy_(bq)
                new.k_proj.bias.copy_(bk)
                new.v_proj.bias.copy_(bv)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        key_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Attention output and ``None`` (weights are never materialised).

        ``key_padding_mask`` (right padding only) or ``key_lengths`` mark padded keys.
        ``is_causal=True`` (or an ``attn_mask`` that is exactly the causal mask) adds
        ``causal=1`` to the pattern; other ``attn_mask`` values are not supported.

        Examples
        --------
        >>> attn = SparseMultiheadAttention(32, 2, Pattern.dense())
        >>> out, w = attn(torch.randn(1, 5, 32), key_lengths=torch.tensor([3]))
        >>> w is None
        True
        """
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, _ = query.shape
        lk = key.shape[1]
        pattern = self.pattern
        if attn_mask is not None and not is_causal:
            if not _is_causal_mask(attn_mask, lq, lk):
                raise NotImplementedError(
                    "SparseMultiheadAttention: attn_mask is not supported; express the mask as a "
                    "Pattern (causal masks are recognised, or pass is_causal=True)"
                )
            is_causal = True
        if is_causal and not pattern.causal:
            pattern = pattern.replace(causal=True)
        if key_lengths is None and key_padding_mask is not None:
            key_lengths = _lengths_from_padding_mask(key_padding_mask)
        q = self.q_proj(query).view(b, lq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(b, lk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = sparse_attention(q, k, v, pattern, key_lengths=key_lengths)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, pattern={self.pattern.describe()!r}"
        )


def swap_attention(
    module: nn.Module, pattern: Pattern, cross_pattern: Pattern | None = None
) -> nn.Module:
    """Replace the attention of one layer in place and return the layer.

    ``self_attn`` becomes a :class:`SparseMultiheadAttention` with ``pattern``; a decoder's
    ``multihead_attn`` (cross attention) is swapped only when ``cross_pattern`` is given. An
    ``nn.MultiheadAttention`` passed directly is converted and returned.

    Examples
    --------
    >>> layer = nn.TransformerEncoderLayer(32, 4, batch_first=True)
    >>> swap_attention(layer, Pattern.sliding_window(4)).self_attn.num_heads
    4
    """
    if isinstance(module, nn.MultiheadAttention):
        return SparseMultiheadAttention.from_mha(module, pattern)
    attn = getattr(module, "self_attn", None)
    if isinstance(attn, nn.MultiheadAttention):
        module.self_attn = SparseMultiheadAttention.from_mha(attn, pattern)
    cross = getattr(module, "multihead_attn", None)
    if cross_pattern is not None and isinstance(cross, nn.MultiheadAttention):
        module.multihead_attn = SparseMultiheadAttention.from_mha(cross, cross_pattern)
    return module


def convert_transformer(
    model: nn.Module, pattern: Pattern, cross_pattern: Pattern | None = None
) -> nn.Module:
    """Swap every ``self_attn`` (and ``multihead_attn`` with ``cross_pattern``) in place.

    Also turns off ``nn.TransformerEncoder``'s nested-tensor fast path, which bypasses the
    attention modules. With ``Pattern.dense()`` the outputs equal the original model's.

    Examples
    --------
    >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, batch_first=True), 2)
    >>> enc = convert_transformer(enc, Pattern.longformer(16, 1))
    >>> enc(torch.randn(2, 40, 32)).shape
    torch.Size([2, 40, 32])
    """
    for mod in list(model.modules()):
        if isinstance(mod, nn.TransformerEncoder):
            mod.use_nested_tensor = False
        if not isinstance(mod, nn.MultiheadAttention):
            swap_attention(mod, pattern, cross_pattern)
    return model
