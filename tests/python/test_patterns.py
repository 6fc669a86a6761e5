"""Pattern constructors (the spec's window-convention table), attributes, masks and density."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES

from spattn import Pattern
from spattn.reference import allowed_mask


def _ij(lq, lk):
    i = torch.arange(lq).view(-1, 1) + (lk - lq)  # positions, bottom-right aligned
    j = torch.arange(lk).view(1, -1)
    return i, j


@pytest.mark.parametrize("w", [1, 4, 7])
def test_hf_sliding_window(w):
    p = Pattern.from_hf_sliding_window(w)
    assert p.attributes()["window_left"] == w - 1 and p.causal
    i, j = _ij(20, 20)
    assert torch.equal(p.token_mask(20)[0], (j <= i) & (i - j < w))
    legacy = Pattern.from_hf_sliding_window(w, legacy_flash_attn=True)
    assert torch.equal(legacy.token_mask(20)[0], (j <= i) & (i - j <= w))
    assert Pattern.causal_sliding_window(w) == p


def test_longformer_window():
    p = Pattern.longformer(6, num_global=2)
    i, j = _ij(16, 16)
    want = ((i - j).abs() <= 3) | (j < 2) | (i < 2)
    assert torch.equal(p.token_mask(16)[0], want)
    with pytest.raises(ValueError, match="attention_window"):
        Pattern.longformer(5)


@pytest.mark.parametrize("left,right", [(3, 0), (2, 5), (-1, 1), (4, -1)])
@pytest.mark.parametrize("lq,lk", [(10, 10), (4, 12), (12, 4)])
def test_flash_attn_and_onnx_windows(left, right, lq, lk):
    i, j = _ij(lq, lk)
    want = torch.ones(lq, lk, dtype=torch.bool)
    if left != -1:
        want &= j >= i - left
    if right != -1:
        want &= j <= i + right
    assert torch.equal(Pattern.from_flash_attn_window((left, right)).token_mask(lq, lk)[0], want)
    onnx_p = Pattern.from_onnx_attention(left, right, is_causal=1)
    assert torch.equal(onnx_p.token_mask(lq, lk)[0], want & (j <= i))


def test_bigbird_mapping_and_exact_blocks():
    a = Pattern.bigbird(16, num_local_blocks=3, num_global_blocks=2, num_random=3, seed=4)
    assert a.attributes() == {
        "window_left": 16,
        "window_right": 16,
        "causal": 0,
        "num_global": 32,
        "stride": 0,
        "block_size": 16,
        "num_random": 3,
        "seed": 4,
    }
    e = Pattern.bigbird(4, num_random=0, num_global_blocks=0, exact_blocks=True)
    m = e.token_mask(16)[0]
    qb = torch.arange(16).view(-1, 1) // 4
    kb = torch.arange(16).view(1, -1) // 4
    assert torch.equal(m, (qb - kb).abs() <= 1)
    # the band form covers the exact blocks minus the far corners
    band = Pattern.bigbird(4, num_random=0, num_global_blocks=0).token_mask(16)[0]
    assert torch.all(m | ~band)
    with pytest.raises(ValueError):
        Pattern.bigbird(4, num_local_blocks=2)


def test_strided():
    p = Pattern.strided(4)
    assert p.attributes()["window_left"] == 3 and p.stride == 4 and p.causal
    i, j = _ij(16, 16)
    assert torch.equal(p.token_mask(16)[0], (j <= i) & ((i - j < 4) | ((i - j) % 4 == 0)))


def test_block_layout_constructor_and_instance_method():
    bi = torch.tensor([[[0, -1], [1, 0]]], dtype=torch.int32)
    p = Pattern.block_layout(bi, block_size=4)
    assert p.has_layout and not p.local_on
    m = p.token_mask(8)[0]
    assert m[:4, :4].all() and not m[:4, 4:].any() and m[4:].all()
    assert p.block_layout(8, 8).tolist() == [[[True, False], [True, True]]]
    with pytest.raises(ValueError, match="query blocks"):
        p.token_mask(16)
    assert Pattern.block_layout([[0], [1]], 4).layout_at(8).shape == (1, 2, 1)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_block_layout_mask_matches_token_mask(name):
    p = FAMILIES[name]
    lq, lk, bs = 45, 37, 8
    tm = p.token_mask(lq, lk, heads=2)
    pad = torch.zeros(2, 48, 40, dtype=torch.bool)
    pad[:, :lq, :lk] = tm
    want = pad.view(2, 6, 8, 5, 8).any(dim=4).any(dim=2)
    assert torch.equal(p.block_layout(lq, lk, block_size=bs, heads=2), want)


def test_attributes_round_trip():
    for p in FAMILIES.values():
        attrs = p.attributes()
        assert set(attrs) >= {
            "window_left",
            "window_right",
            "causal",
            "num_global",
            "stride",
            "block_size",
            "num_random",
            "seed",
        }
        assert ("scale" in attrs) == (p.scale is not None)
        assert all(isinstance(v, int) for k, v in attrs.items() if k != "scale")
        q = Pattern.from_attributes(attrs, block_indices=p.block_indices)
        assert q == p


@pytest.mark.parametrize(
    "bad",
    [
        dict(window_left=-2),
        dict(num_global=-1),
        dict(block_size=0),
        dict(block_size=65537),
        dict(seed=2**31),
        dict(scale=-1.0),
        dict(stride=-3),
        dict(causal=2),
    ],
)
def test_invalid_attributes(bad):
    with pytest.raises(ValueError):
        Pattern(**bad)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_density(name):
    p = FAMILIES[name]
    for lq, lk in [(33, 33), (20, 50)]:
        want = allowed_mask(p, lq, lk, 3).sum().item() / (3 * lq * lk)
        assert p.density(lq, lk, heads=3) == pytest.approx(want, abs=1e-12)


def test_density_long_without_quadratic_memory():
    L = 65536
    d = Pattern.longformer(512, num_global=4).density(L)
    # every row sees its band (clipped at the ends) plus the global tokens
    assert 512 / L < d < 600 / L


def test_describe_and_plot(tmp_path):
    assert "window_left=4" in Pattern.longformer(8, 2).describe()
    assert "callable" in Pattern.bigbird(8, exact_blocks=True).describe()
    for lq in (64, 2048):
        path = Pattern.bigbird(16).plot(lq, str(tmp_path / f"p{lq}.png"))
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_chunked_pattern_words_and_attributes():
    p = Pattern.chunked(8192)
    assert p.attributes() == {**Pattern.dense(causal=True).attributes(), "chunk_size": 8192}
    assert p.family() == "causal chunked attention" and p.components() == ["window"]
    assert "within chunks of 8192" in p.label()
    # chunks beside global tokens: a band with no family of its own, never "Longformer"
    q = Pattern(chunk_size=6, window_left=3, window_right=3, num_global=2)
    assert q.family() == "" and q.local_on and q.components() == ["window", "global"]
    # chunks keep the band on beside another component (the spec's local_on)
    assert Pattern(chunk_size=4, num_global=1).local_on
    assert not Pattern(num_global=1).local_on
    assert Pattern.dense().attributes().get("chunk_size") is None  # written only when set
    with pytest.raises(ValueError, match="chunk_size"):
        Pattern.chunked(0)
    with pytest.raises(ValueError, match="chunk_size"):
        Pattern(chunk_size=-1)
