"""SparseMultiheadAttention and the swap of nn.MultiheadAttention in Transformer layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spattn import Pattern, SparseMultiheadAttention, convert_transformer, swap_attention
from spattn.reference import reference_attention
from spattn.tolerances import assert_close


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 24])
def test_dense_equals_mha(batch_first, kdim):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    sp = SparseMultiheadAttention.from_mha(mha, Pattern.dense())
    shape_q = (2, 9, 32) if batch_first else (9, 2, 32)
    shape_k = (2, 13, kdim or 32) if batch_first else (13, 2, kdim or 32)
    x, y = torch.randn(*shape_q), torch.randn(*shape_k)
    pad = torch.arange(13).view(1, -1) >= torch.tensor([[13], [8]])
    with torch.no_grad():
        want = mha(x, y, y, key_padding_mask=pad, need_weights=False)[0]
        got, w = sp(x, y, y, key_padding_mask=pad)
    assert w is None
    assert_close(got, want, torch.float32)


def test_gqa_module_matches_reference():
    torch.manual_seed(0)
    p = Pattern.causal_sliding_window(5)
    m = SparseMultiheadAttention(32, 4, p, num_kv_heads=2).eval()
    x = torch.randn(2, 20, 32)
    kl = torch.tensor([20, 11])
    with torch.no_grad():
        got = m(x, key_lengths=kl)[0]
        q = m.q_proj(x).view(2, 20, 4, 8).transpose(1, 2)
        k = m.k_proj(x).view(2, 20, 2, 8).transpose(1, 2)
        v = m.v_proj(x).view(2, 20, 2, 8).transpose(1, 2)
        o = reference_attention(q, k, v, p, key_lengths=kl)
        want = m.out_proj(o.transpose(1, 2).reshape(2, 20, 32))
    assert_close(got, want, torch.float32)


def test_gradients_flow():
    m = SparseMultiheadAttention(16, 2, Pattern.longformer(4, 1))
    x = torch.randn(1, 12, 16, requires_grad=True)
    m(x)[0].sum().backward()
    assert x.grad is not None and m.q_proj.weight.grad is not None


def test_unsupported_masks():
    m = SparseMultiheadAttention(16, 2, Pattern.dense()).eval()
    x = torch.randn(1, 6, 16)
    with pytest.raises(NotImplementedError):
        m(x, attn_mask=torch.randn(6, 6))
    with pytest.raises(ValueError, match="key_padding_mask: .*contiguous.*holes in row 0"):
        m(x, key_padding_mask=torch.tensor([[False, True, False, False, False, False]]))
    with pytest.raises(ValueError, match="attention_mask: .*holes in row 1"):
        m(torch.randn(2, 3, 16), attention_mask=torch.tensor([[1, 1, 1], [1, 0, 1]]))


@pytest.mark.parametrize("padded", [False, True])
def test_convert_encoder_dense_equals_original(padded):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(2, 10, 32)
    pad = torch.arange(10).view(1, -1) >= torch.tensor([[10], [6]]) if padded else None
    with torch.no_grad():
        want = enc(x, src_key_padding_mask=pad)  # may take the fast path
        conv = convert_transformer(copy.deepcopy(enc), Pattern.dense())
        got = conv(x, src_key_padding_mask=pad)
    assert isinstance(conv.layers[0].self_attn, SparseMultiheadAttention)
    if padded:  # the fast path leaves padded positions at zero; compare valid positions
        got, want = got[~pad], want[~pad]
    assert_close(got, want, torch.float32)


def test_convert_decoder_with_causal_mask():
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(
        32, 4, dim_feedforward=64, dropout=0.0, batch_first=True
    ).eval()
    x, mem = torch.randn(2, 7, 32), torch.randn(2, 11, 32)
    mask = nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        want = layer(x, mem, tgt_mask=mask, tgt_is_causal=True)
        conv = swap_attention(copy.deepcopy(layer), Pattern.dense(), cross_pattern=Pattern.dense())
        got = conv(x, mem, tgt_mask=mask, tgt_is_causal=True)
        got2 = conv(x, mem, tgt_mask=mask)  # causal mask recognised without the flag
    assert isinstance(conv.multihead_attn, SparseMultiheadAttention)
    assert_close(got, want, torch.float32)
    assert_close(got2, want, torch.float32)


def test_sparse_swap_changes_output_only_where_pattern_differs():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16, 2, dim_feedforward=32, dropout=0.0, batch_first=True
    ).eval()
    conv = swap_attention(copy.deepcopy(layer), Pattern.sliding_window(2))
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        out = conv(x)
        y = conv.self_attn
        q = y.q_proj(x).view(1, 12, 2, 8).transpose(1, 2)
        k = y.k_proj(x).view(1, 12, 2, 8).transpose(1, 2)
        v = y.v_proj(x).view(1, 12, 2, 8).transpose(1, 2)
        o = reference_attention(q, k, v, Pattern.sliding_window(2))
        a = y.out_proj(o.transpose(1, 2).reshape(1, 12, 16))
        h = conv.norm1(x + a)
        want = conv.norm2(h + conv.linear2(conv.activation(conv.linear1(h))))
    assert_close(out, want, torch.float32)
