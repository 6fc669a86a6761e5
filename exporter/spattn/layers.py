"""``SparseMultiheadAttention`` and the swap of ``nn.MultiheadAttention`` in Transformer layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .functional import _is_tracing, key_range_from_padding_mask, sparse_attention
from .patterns import Pattern

__all__ = ["SparseMultiheadAttention", "swap_attention", "convert_transformer"]


def _bad(name: str, expect: str, got: Any) -> ValueError:
    return ValueError(f"SparseMultiheadAttention: {name}: expected {expect}, got {got}")


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
    sinks : bool
        Learn one attention-sink logit per query head (``self.sinks``, float32 ``[num_heads]``,
        initialised to 0): it enters each row's softmax denominator only (as in gpt-oss).

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
        sinks: bool = False,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for name, value in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("num_kv_heads", num_kv_heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _bad(name, "an integer >= 1", repr(value))
        if not isinstance(pattern, Pattern):
            raise _bad("pattern", "a spattn.Pattern", type(pattern).__name__)
        if embed_dim % num_heads:
            raise _bad("embed_dim", f"a multiple of num_heads {num_heads}", embed_dim)
        if num_heads % num_kv_heads:
            raise _bad("num_heads", f"a multiple of num_kv_heads {num_kv_heads}", num_heads)
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
        # Sinks stay float32 whatever the model's dtype: the op takes them as float32 logits.
        self.sinks: nn.Parameter | None = (
            nn.Parameter(torch.zeros(num_heads, device=device, dtype=torch.float32))
            if sinks
            else None
        )

    @classmethod
    def from_mha(
        cls, mha: nn.MultiheadAttention, pattern: Pattern, sinks: bool = False
    ) -> SparseMultiheadAttention:
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
            sinks=sinks,
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
        key_starts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Attention output and ``None`` (weights are never materialised).

        Padded keys are given by ``key_padding_mask`` (``[B, Lk]``, True or ``-inf`` = padding,
        as in ``nn.MultiheadAttention``), by ``attention_mask`` (``[B, Lk]``, 1 = token, 0 =
        padding, as in Hugging Face), or directly by ``key_starts``/``key_lengths``. Left and
        right padding are both exact; a mask with holes (``1 0 1``) is an error (see
        :func:`spattn.functional.key_range_from_padding_mask`, also for exported graphs).
        ``global_attention_mask`` (``[B, Lk]``, nonzero = global token, as in Longformer) makes
        those tokens global for this input. ``is_causal=True`` (or an ``attn_mask`` that is
        exactly the causal mask) adds ``causal=1`` to the pattern; other ``attn_mask`` values are
        not supported.

        Examples
        --------
        >>> attn = SparseMultiheadAttention(32, 2, Pattern.longformer(4), sinks=True)
        >>> x = torch.randn(2, 6, 32)
        >>> pad = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])  # left, right padded
        >>> glob = torch.tensor([[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
        >>> out, w = attn(x, attention_mask=pad, global_attention_mask=glob)
        >>> out.shape, w is None
        (torch.Size([2, 6, 32]), True)
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
        masks = [
            n
            for n, m in (("key_padding_mask", key_padding_mask), ("attention_mask", attention_mask))
            if m is not None
        ]
        if len(masks) > 1 or (masks and (key_lengths is not None or key_starts is not None)):
            given = masks + [
                n
                for n, m in (("key_lengths", key_lengths), ("key_starts", key_starts))
                if m is not None
            ]
            raise _bad(given[0], "alone (a padding mask or key_starts/key_lengths)", given)
        if masks:
            key_starts, key_lengths = key_range_from_padding_mask(key_padding_mask, attention_mask)
            if not _is_tracing() and not bool(key_starts.any()):
                key_starts = None  # right padding only: key_lengths says it all
        q = self.q_proj(query).view(b, lq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(b, lk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = sparse_attention(
            q,
            k,
            v,
            pattern,
            key_lengths=key_lengths,
            key_starts=key_starts,
            global_mask=global_attention_mask,
            sinks=self.sinks,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, pattern={self.pattern.describe()!r}"
            + (", sinks=True" if self.sinks is not None else "")
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
