"""Small built-in models for the exporter, the command line and the README."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layers import SparseMultiheadAttention, convert_transformer
from .patterns import Pattern

__all__ = [
    "LongformerEncoder",
    "GQADecoderBlock",
    "longformer_encoder",
    "gqa_decoder_block",
    "longformer_base",
    "SAMPLES",
]


class LongformerEncoder(nn.Module):
    """``nn.TransformerEncoder`` whose attention is a local window plus global tokens."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, pattern: Pattern) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = convert_transformer(
            nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False), pattern
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.encoder(x))


class GQADecoderBlock(nn.Module):
    """Pre-norm decoder block: causal sliding-window GQA attention and an MLP."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, pattern: Pattern) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SparseMultiheadAttention(
            d_model, num_heads, pattern, num_kv_heads=num_kv_heads, bias=False
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, key_lengths: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, key_lengths=key_lengths)[0]
        return x + self.mlp(self.norm2(x))


def longformer_encoder(
    d_model: int = 64,
    nhead: int = 4,
    num_layers: int = 2,
    attention_window: int = 32,
    num_global: int = 2,
    seq_len: int = 256,
    batch: int = 2,
    seed: int = 0,
) -> tuple[nn.Module, tuple[Any, ...]]:
    """A small Longformer-style encoder and example inputs ``(x [B, L, E],)``.

    Examples
    --------
    >>> model, inputs = longformer_encoder(seq_len=64)
    >>> model(*inputs).shape
    torch.Size([2, 64, 64])
    """
    torch.manual_seed(seed)
    model = LongformerEncoder(
        d_model, nhead, num_layers, Pattern.longformer(attention_window, num_global)
    ).eval()
    return model, (torch.randn(batch, seq_len, d_model),)


def gqa_decoder_block(
    d_model: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    window: int = 32,
    seq_len: int = 128,
    batch: int = 2,
    seed: int = 0,
) -> tuple[nn.Module, tuple[Any, ...]]:
    """A causal sliding-window GQA decoder block and inputs ``(x [B, L, E], key_lengths [B])``.

    Examples
    --------
    >>> model, inputs = gqa_decoder_block(seq_len=32)
    >>> model(*inputs).shape
    torch.Size([2, 32, 64])
    """
    torch.manual_seed(seed)
    model = GQADecoderBlock(
        d_model, num_heads, num_kv_heads, Pattern.causal_sliding_window(window)
    ).eval()
    x = torch.randn(batch, seq_len, d_model)
    lengths = torch.tensor(
        [seq_len] + [max(1, seq_len - 7 * i) for i in range(1, batch)], dtype=torch.int32
    )
    return model, (x, lengths)


def longformer_base(
    d_model: int = 512,
    nhead: int = 8,
    num_layers: int = 2,
    attention_window: int = 512,
    num_global: int = 64,
    seq_len: int = 4096,
    batch: int = 1,
    seed: int = 0,
) -> tuple[nn.Module, tuple[Any, ...]]:
    """The quickstart's encoder (samples/quickstart.py, ``make demo``): 2 layers, d_model 512,
    8 heads (head dim 64), a band of +-256 tokens and 64 global tokens, at L = 4096.

    Examples
    --------
    >>> model, (x,) = longformer_base(seq_len=128)
    >>> tuple(x.shape)
    (1, 128, 512)
    """
    return longformer_encoder(
        d_model, nhead, num_layers, attention_window, num_global, seq_len, batch, seed
    )


#: ``{name: factory}``; each factory returns ``(model, example_inputs)``.
SAMPLES: dict[str, Callable[..., tuple[nn.Module, tuple[Any, ...]]]] = {
    "longformer_encoder": longformer_encoder,
    "gqa_decoder_block": gqa_decoder_block,
    "longformer_base": longformer_base,
}
