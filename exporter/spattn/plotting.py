"""Pictures of a pattern's mask: each allowed (query, key) pair coloured by the component that
allows it, with a legend, exact axes and the density of what is drawn.

Up to ``max_tokens`` queries and keys the picture is the token mask; beyond, it is the block
layout (a block is drawn when at least one of its pairs is allowed). Every category is computed
with the spec's mask (:class:`spattn.reference.MaskRule` and the block-sparse enumeration), one
component at a time, so the picture is the op's mask and not a separate drawing of it.

Examples
--------
>>> from spattn import Pattern
>>> fig = figure(Pattern.longformer(8, 2), 32)
>>> [t.get_text().split(":")[0] for t in fig.axes[0].get_legend().get_texts()]
['global', 'window', 'not allowed']
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import torch

from . import blocksparse, reference

__all__ = ["CATEGORIES", "categories", "figure"]

# (category, colour); the code of a category is its index. The components come in the order
# that decides a pair allowed by several: the first of them colours it.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("not allowed", "#ffffff"),
    ("global", "#d62728"),
    ("window", "#1f77b4"),
    ("strided", "#2ca02c"),
    ("random", "#ff7f0e"),
    ("listed", "#9467bd"),
    ("causal-masked", "#c7c7c7"),
    ("padding", "#7f7f7f"),
)
_CODE = {name: k for k, (name, _) in enumerate(CATEGORIES)}


def _component_pattern(pattern: Any, component: str, lq: int, lk: int) -> Any:
    """The pattern with only ``component`` on (causal kept: it applies to every component)."""
    from .patterns import Pattern

    common: dict[str, Any] = {"causal": pattern.causal, "block_size": pattern.block_size}
    if component == "window":
        return Pattern(window_left=pattern.window_left, window_right=pattern.window_right, **common)
    if component == "global":
        return Pattern(num_global=pattern.num_global, **common)
    if component == "strided":
        return Pattern(stride=pattern.stride, **common)
    if component == "random":
        return Pattern(num_random=pattern.num_random, seed=pattern.seed, **common)
    return Pattern(block_indices=pattern.layout_at(lq, lk), **common)


def _global_mask(tokens: Sequence[int] | None, lk: int) -> torch.Tensor | None:
    if tokens is None:
        return None
    gm = torch.zeros(1, lk, dtype=torch.int32)
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < lk:
            raise ValueError(f"global_tokens: expected positions in [0, {lk}), got {t!r}")
        gm[0, t] = 1
    return gm


def _key_lengths(key_length: int | None, lk: int) -> torch.Tensor | None:
    if key_length is None:
        return None
    if isinstance(key_length, bool) or not isinstance(key_length, int):
        raise ValueError(f"key_length: expected an integer in [0, {lk}], got {key_length!r}")
    if not 0 <= key_length <= lk:
        raise ValueError(f"key_length: expected an integer in [0, {lk}], got {key_length}")
    return torch.tensor([key_length], dtype=torch.int32)


class _Grid:
    """Allowed pairs (token picture) or blocks holding one (block picture) of one head."""

    def __init__(
        self, lq: int, lk: int, heads: int, head: int, bs: int | None, gm: Any, kl: Any
    ) -> None:
        self.lq, self.lk, self.heads, self.head, self.bs = lq, lk, heads, head, bs
        self.gm, self.kl = gm, kl

    def __call__(self, pattern: Any, padding: bool = True) -> torch.Tensor:
        kl = self.kl if padding else None
        if self.bs is not None:
            m = blocksparse.block_any_mask(
                pattern, self.lq, self.lk, self.heads, self.bs, key_lengths=kl, global_mask=self.gm
            )
            return m[self.head]
        rule = reference.MaskRule(
            pattern, self.lq, self.lk, self.heads, kl, None, global_mask=self.gm
        )
        i = torch.arange(self.lq).view(-1, 1)
        j = torch.arange(self.lk).view(1, -1)
        b = torch.tensor(0) if rule.batch is not None else None
        return rule.allowed(i, j, torch.tensor(self.head), b).expand(self.lq, self.lk)


def _heads(pattern: Any, lq: int, lk: int, head: int) -> int:
    layout = pattern.layout_at(lq, lk)
    hl = 1 if layout is None else int(layout.shape[0])
    if hl > 1 and head >= hl:
        raise ValueError(f"head: expected < {hl} (the layout's heads), got {head}")
    return max(hl, head + 1)


def categories(
    pattern: Any,
    lq: int,
    lk: int | None = None,
    head: int = 0,
    *,
    block_size: int | None = None,
    global_tokens: Sequence[int] | None = None,
    key_length: int | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Int ``[lq, lk]`` (or ``[ceil(lq/bs), ceil(lk/bs)]`` with ``block_size``): each cell's
    index into :data:`CATEGORIES`, and the names of the categories this pattern can produce.

    ``global_tokens``: positions marked in a ``global_mask`` input (batch 0); None: no such
    input. ``key_length``: ``key_lengths[0]`` (keys from it on are padding); None: no padding.

    Examples
    --------
    >>> from spattn import Pattern
    >>> codes, names = categories(Pattern.dense(causal=True), 3)
    >>> codes.tolist(), names
    ([[2, 6, 6], [2, 2, 6], [2, 2, 2]], ['window', 'causal-masked', 'not allowed'])
    """
    from .patterns import _lengths

    lq, lk, _ = _lengths(lq, lk)
    gm, kl = _global_mask(global_tokens, lk), _key_lengths(key_length, lk)
    grid = _Grid(lq, lk, _heads(pattern, lq, lk, head), head, block_size, gm, kl)
    final = grid(pattern)
    codes = torch.zeros(final.shape, dtype=torch.int64)
    comps = pattern.components(global_mask=gm is not None)
    names = [c for c, _ in CATEGORIES if c in comps]
    for c in names:
        hit = grid(_component_pattern(pattern, c, lq, lk)) & final & (codes == 0)
        codes[hit] = _CODE[c]
    unpadded = grid(pattern, padding=False) if kl is not None else final
    if pattern.causal:
        names.append("causal-masked")
        structural = grid(pattern.replace(causal=False), padding=False)
        codes[(codes == 0) & structural & ~unpadded] = _CODE["causal-masked"]
    if kl is not None:
        names.append("padding")
        codes[(codes == 0) & unpadded & ~final] = _CODE["padding"]
    names.append("not allowed")
    return codes, names


def _token_density(
    pattern: Any, lq: int, lk: int, heads: int, head: int, gm: Any, kl: Any
) -> float:
    """Allowed pairs of one head over ``lq * lk``, counted slice by slice (no ``lq x lk``)."""
    total = 0
    for _, _, mask in blocksparse._iter_masks(pattern, lq, lk, heads, kl, None, gm):
        m = mask[0]
        total += int((m[head] if m.shape[0] > 1 else m[0]).sum())
    return total / float(lq * lk)


def _legend_text(pattern: Any, name: str, global_tokens: Any, key_length: Any, unit: str) -> str:
    gm = global_tokens is not None
    if name in ("window", "global", "strided", "random", "listed"):
        text = pattern.component_text(name, global_mask=gm)
        if name == "global" and gm:
            shown = ", ".join(map(str, global_tokens)) if global_tokens else "none"
            text += f" (drawn: global_mask marks {shown})"
        return text
    if name == "causal-masked":
        return "causal-masked: allowed by a component, but the key is after the query"
    if name == "padding":
        return f"padding: keys from key_length {key_length} on"
    return f"not allowed: no component allows the {unit}"


def figure(
    pattern: Any,
    lq: int,
    lk: int | None = None,
    head: int = 0,
    *,
    global_tokens: Sequence[int] | None = None,
    key_length: int | None = None,
    max_tokens: int = 1024,
) -> Any:
    """A :class:`matplotlib.figure.Figure` of the mask of ``head`` (see the module docstring).

    The token mask when ``lq, lk <= max_tokens``, else the block layout with the pattern's
    ``block_size``. The title gives the density of what is drawn (token density, or block
    density with the token density beside it); the legend says what each colour means.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .patterns import _int_arg, _lengths

    lq, lk, _ = _lengths(lq, lk)
    head = _int_arg("head", head, 0)
    max_tokens = _int_arg("max_tokens", max_tokens, 1)
    bs = None if lq <= max_tokens and lk <= max_tokens else pattern.block_size
    codes, names = categories(
        pattern, lq, lk, head, block_size=bs, global_tokens=global_tokens, key_length=key_length
    )
    gm, kl = _global_mask(global_tokens, lk), _key_lengths(key_length, lk)
    heads = _heads(pattern, lq, lk, head)
    fig = Figure(figsize=(6.0, 7.0))
    ax = fig.add_subplot(1, 1, 1)
    cmap = ListedColormap([colour for _, colour in CATEGORIES])
    ax.imshow(
        codes.numpy(),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(CATEGORIES) - 0.5,
        interpolation="nearest",
        aspect="auto",
    )
    per_head = ", head " + str(head) if "random" in names or "listed" in names else ""
    token_density = _token_density(pattern, lq, lk, heads, head, gm, kl)
    if bs is None:
        ax.set_xlabel("key position j (token)")
        shift = lk - lq
        ax.set_ylabel(
            "query index i (token)"
            + (f"; its position is i {'+' if shift > 0 else '-'} {abs(shift)}" if shift else "")
        )
        what = f"token mask, Lq={lq} Lk={lk}{per_head}: token density {token_density:.1%}"
    else:
        ax.set_xlabel(f"key block b (keys {bs}b to {bs}b+{bs - 1}; {codes.shape[1]} blocks)")
        ax.set_ylabel(f"query block b (queries {bs}b to {bs}b+{bs - 1}; {codes.shape[0]} blocks)")
        drawn = (codes != 0) & (codes < _CODE["causal-masked"])  # allowed blocks
        block_density = float(drawn.double().mean())
        what = (
            f"block layout, blocks of {bs} tokens, Lq={lq} Lk={lk}{per_head}: "
            f"block density {block_density:.1%} (token density {token_density:.1%})"
        )
    title = [pattern.label(global_mask=gm is not None), what]
    if gm is not None:
        title.append("global_mask is an input (per input): the picture marks one example")
    ax.set_title("\n".join(title), fontsize=8)
    unit = "pair" if bs is None else "block"
    handles = [
        Patch(
            facecolor=CATEGORIES[_CODE[n]][1],
            edgecolor="black",
            label=textwrap.fill(
                _legend_text(pattern, n, global_tokens, key_length, unit),
                90,
                subsequent_indent="  ",
            ),
        )
        for n in names
    ]
    ax.legend(
        handles=handles,
        title=f"colour: the first listed component that allows the {unit}",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        fontsize=7,
        title_fontsize=7,
        frameon=False,
    )
    fig.tight_layout()
    return fig
