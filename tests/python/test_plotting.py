"""Pattern labels and mask pictures: the label of every factory pattern and of patterns read back
from node attributes (and inputs), and the matplotlib Figure of ``Pattern.figure`` / ``plot``:
axis labels, title (the density of what is drawn), legend entries, and colours that are the
op's mask component by component."""

from __future__ import annotations

import re

import pytest
import torch

from spattn import Pattern
from spattn.nodes import node_label
from spattn.plotting import CATEGORIES, categories

pytest.importorskip("matplotlib")

CODE = {name: k for k, (name, _) in enumerate(CATEGORIES)}


def legend(fig) -> list[str]:
    return [t.get_text().replace("\n  ", " ") for t in fig.axes[0].get_legend().get_texts()]


# ------------------------------------------------------------------------------ labels
@pytest.mark.parametrize(
    "pattern, label",
    [
        (Pattern.dense(), "dense"),
        (Pattern.dense(causal=True), "causal dense"),
        (Pattern.sliding_window(4), "sliding window ±4"),
        (Pattern.sliding_window(4, 2), "sliding window: window 4 keys before to 2 after"),
        (Pattern.causal_sliding_window(8), "causal sliding window of 8 keys"),
        (
            Pattern.longformer(512, 64),
            "Longformer: sliding window ±256 + the first 64 tokens global",
        ),
        (
            Pattern.bigbird(16),
            "BigBird: sliding window ±16 + the first 16 tokens global + 2 random blocks of 16",
        ),
        (
            Pattern.bigbird(16, exact_blocks=True),
            "BigBird (exact blocks): the first 16 tokens global + 2 random blocks of 16 + "
            "listed blocks of 16 (block_indices)",
        ),
        (
            Pattern.strided(8),
            "Sparse Transformer strided: causal sliding window of 8 keys + stride 8",
        ),
        (
            Pattern.block_layout([[[0, -1], [0, 1]]], block_size=16),
            "block layout: listed blocks of 16 (block_indices)",
        ),
        (
            Pattern.from_hf_sliding_window(4096),
            "Hugging Face sliding window: causal sliding window of 4096 keys",
        ),
        (
            Pattern.from_flash_attn_window((128, 0)),
            "FlashAttention window: window 128 keys before to 0 after",
        ),
        (
            Pattern.from_onnx_attention(16, 0, 1),
            "ONNX Attention window: causal sliding window of 17 keys",
        ),
    ],
)
def test_every_factory_pattern_has_a_descriptive_label(pattern, label):
    assert pattern.label() == label
    assert pattern.describe().startswith(label + " (")
    assert "custom" not in pattern.describe()


@pytest.mark.parametrize(
    "factory, family",
    [
        (Pattern.longformer(512, 64), "Longformer"),
        (Pattern.bigbird(64), "BigBird"),
        (Pattern.strided(128), "Sparse Transformer strided"),
        (Pattern.dense(), "dense"),
        (Pattern.sliding_window(3), "sliding window"),
        (Pattern.causal_sliding_window(5), "causal sliding window"),
    ],
)
def test_patterns_read_back_from_attributes_are_recognised(factory, family):
    read = Pattern.from_attributes(factory.attributes())
    assert read.name == ""  # nothing but the attributes
    assert read.family() == family
    assert read.label().split(":")[0].startswith(family)
    assert read.label().split(": ")[-1] == factory.label().split(": ")[-1]


def test_exported_longformer_nodes_are_labelled_from_attributes_and_inputs():
    # spattn.hf's Longformer: a band with the global_mask input, then global attention only.
    inputs = ["q", "k", "v", "key_lengths", "", "global_mask", "key_starts"]
    band = node_label({"window_left": 256, "window_right": 256, "scale": 0.125}, inputs)
    assert band == "Longformer: sliding window ±256 + per-input global tokens (global_mask)"
    glob = node_label({"scale": 0.125}, inputs)
    assert glob.startswith("global tokens only")
    assert "per-input global tokens (global_mask)" in glob
    # Without the input the same attributes are dense attention: the input changes the label.
    assert node_label({"scale": 0.125}, ["q", "k", "v"]) == "dense"
    described = node_label({"window_left": 2, "window_right": 2}, inputs, with_attributes=True)
    assert described.endswith("(window_left=2 window_right=2)")
    listed = node_label({"block_size": 16}, ["q", "k", "v", "", "layout"])
    assert listed == "block layout: listed blocks of 16 (block_indices, computed at run time)"


# ------------------------------------------------------------------------------ token picture
def test_token_picture_axes_title_and_legend():
    p = Pattern.longformer(8, 2)
    fig = p.figure(32)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "key position j (token)"
    assert ax.get_ylabel() == "query index i (token)"
    density = float(p.token_mask(32)[0].float().mean())
    title = ax.get_title().splitlines()
    assert title[0] == "Longformer: sliding window ±4 + the first 2 tokens global"
    assert title[1] == f"token mask, Lq=32 Lk=32: token density {density:.1%}"
    assert legend(fig) == [
        "global: the first 2 tokens attend and are attended by every token",
        "window: keys within ±4 of the query",
        "not allowed: no component allows the pair",
    ]
    assert fig.axes[0].get_legend().get_title().get_text().startswith("colour: the first")


def test_token_picture_with_causal_padding_and_global_mask():
    p = Pattern.sliding_window(2).replace(causal=True)
    fig = p.figure(24, global_tokens=[5], key_length=20)
    assert legend(fig) == [
        "global: tokens marked in the global_mask input (per input) attend and are attended by "
        "every token (drawn: global_mask marks 5)",
        "window: causal sliding window of 3 keys (the query and 2 before it)",
        "causal-masked: allowed by a component, but the key is after the query",
        "padding: keys from key_length 20 on",
        "not allowed: no component allows the pair",
    ]
    title = fig.axes[0].get_title().splitlines()
    assert "per-input global tokens (global_mask)" in title[0]
    assert title[2] == "global_mask is an input (per input): the picture marks one example"
    gm = torch.zeros(1, 24, dtype=torch.int32)
    gm[0, 5] = 1
    from spattn import reference

    mask = reference.allowed_mask(p, 24, 24, 1, torch.tensor([20]), global_mask=gm)[0, 0]
    assert f"token density {float(mask.float().mean()):.1%}" in title[1]


def test_query_axis_says_where_queries_sit_when_lengths_differ():
    ax = Pattern.dense(causal=True).figure(4, 16).axes[0]
    assert ax.get_ylabel() == "query index i (token); its position is i + 12"


@pytest.mark.parametrize(
    "pattern, kw",
    [
        (Pattern.longformer(8, 3), {}),
        (Pattern.bigbird(4, num_random=1), {}),
        (Pattern.bigbird(4, exact_blocks=True), {}),
        (Pattern.strided(5), {}),
        (Pattern.strided(5, causal=False), {"global_tokens": [7, 30]}),
        (Pattern.sliding_window(3).replace(causal=True), {"key_length": 33}),
        (Pattern(num_random=2, block_size=8, seed=3, causal=True), {"key_length": 40}),
    ],
)
def test_colours_are_the_ops_mask_component_by_component(pattern, kw):
    from spattn import reference

    lq = 48
    codes, names = categories(pattern, lq, **kw)
    gm = None
    if "global_tokens" in kw:
        gm = torch.zeros(1, lq, dtype=torch.int32)
        gm[0, kw["global_tokens"]] = 1
    kl = torch.tensor([kw["key_length"]]) if "key_length" in kw else None
    allowed = reference.allowed_mask(pattern, lq, lq, 1, kl, global_mask=gm)[0, 0]
    coloured = (codes >= CODE["global"]) & (codes <= CODE["listed"])
    assert torch.equal(coloured, allowed)  # every allowed pair coloured, nothing else
    for c in ("global", "window", "strided", "random", "listed"):
        assert (c in names) == (c in pattern.components(global_mask=gm is not None))
    if pattern.causal:
        structural = reference.allowed_mask(
            pattern.replace(causal=False), lq, lq, 1, None, global_mask=gm
        )[0, 0]
        i = torch.arange(lq).view(-1, 1)
        j = torch.arange(lq).view(1, -1)
        assert torch.equal(codes == CODE["causal-masked"], structural & (j > i))
    else:
        assert not bool((codes == CODE["causal-masked"]).any())
    if kl is not None:
        unpadded = reference.allowed_mask(pattern, lq, lq, 1, None, global_mask=gm)[0, 0]
        assert torch.equal(codes == CODE["padding"], unpadded & ~allowed)
    else:
        assert not bool((codes == CODE["padding"]).any())


# ------------------------------------------------------------------------------ block picture
def test_block_picture_axes_count_blocks_and_title_gives_both_densities():
    p = Pattern.bigbird(16)
    fig = p.figure(2048)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "key block b (keys 16b to 16b+15; 128 blocks)"
    assert ax.get_ylabel() == "query block b (queries 16b to 16b+15; 128 blocks)"
    blocks = p.block_layout_mask(2048)[0]
    line = ax.get_title().splitlines()[1]
    m = re.fullmatch(
        r"block layout, blocks of 16 tokens, Lq=2048 Lk=2048, head 0: "
        r"block density ([\d.]+)% \(token density ([\d.]+)%\)",
        line,
    )
    assert m, line
    assert m.group(1) == f"{100 * float(blocks.float().mean()):.1f}"
    assert m.group(2) == f"{100 * p.density(2048):.1f}"  # one head: the per-head density
    assert float(m.group(1)) > float(m.group(2))  # a block picture overstates the tokens
    assert legend(fig)[-1] == "not allowed: no component allows the block"
    assert legend(fig)[2].startswith("random: 2 key block(s) of 16 tokens per query block")
    image = ax.get_images()[0].get_array()
    assert image.shape == (128, 128)
    codes, _ = categories(p, 2048, block_size=16)
    assert torch.equal((codes != 0), blocks)


def test_block_picture_of_one_head_of_a_per_head_layout():
    layout = torch.full((2, 32, 1), -1, dtype=torch.int32)
    layout[1, :, 0] = 0  # head 1: every query block reads key block 0; head 0: nothing
    p = Pattern.block_layout(layout, block_size=64)
    t0 = p.figure(2048, head=0).axes[0].get_title()
    t1 = p.figure(2048, head=1).axes[0].get_title()
    assert "head 0: block density 0.0% (token density 0.0%)" in t0
    assert f"head 1: block density {1 / 32:.1%} (token density {1 / 32:.1%})" in t1
    with pytest.raises(ValueError, match="head: expected < 2"):
        p.figure(2048, head=2)


def test_plot_writes_the_figure(tmp_path):
    path = Pattern.bigbird(16).plot(64, str(tmp_path / "m.png"), global_tokens=[3])
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"global_tokens": [64]}, "global_tokens: expected positions in \\[0, 64\\)"),
        ({"key_length": 65}, "key_length: expected an integer in \\[0, 64\\]"),
        ({"key_length": 2.5}, "key_length"),
    ],
)
def test_bad_plot_arguments_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        Pattern.dense().figure(64, **kw)
