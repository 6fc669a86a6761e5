"""Sparse attention patterns: the attributes of one ``spattn::SparseAttention`` node.

A :class:`Pattern` holds exactly the op's attributes (docs/op-spec.md) plus an optional fixed
block layout. Constructors map the usual families (sliding window, Longformer, BigBird, Sparse
Transformer strided, block layouts) and other libraries' window conventions onto them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import attributes, reference

__all__ = ["Pattern"]

_DEFAULT: dict[str, Any] = attributes.defaults()


class _class_or_instance:
    """``Pattern.block_layout(...)`` builds a pattern; ``pattern.block_layout(...)`` draws one."""

    def __init__(self, on_class: Any, on_instance: Any) -> None:
        self.on_class, self.on_instance = on_class, on_instance
        self.__doc__ = on_class.__doc__

    def __get__(self, obj: Any, cls: Any) -> Any:
        if obj is None:
            return self.on_class.__get__(cls, cls)
        return self.on_instance.__get__(obj, cls)


def _int_arg(name: str, value: Any, low: int, high: int = attributes.INT32_MAX) -> int:
    """An integer argument in ``[low, high]``, else ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Pattern: {name}: expected an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"Pattern: {name}: expected >= {low}, got {value!r}")
    if value > high:
        raise ValueError(f"Pattern: {name}: expected <= {high}, got {value!r}")
    return int(value)


def _attr_arg(name: str, value: Any, attr: str) -> Any:
    """A constructor argument that becomes attribute ``attr``, checked by the table's rule but
    named as the caller wrote it (``left`` of ``sliding_window`` is ``window_left``)."""
    if isinstance(value, np.generic):
        value = value.item()
    why = attributes.attribute(attr).problem(value)
    if why is not None:
        raise ValueError(f"Pattern: {name}: expected {why}, got {value!r}")
    return value


def _bool_arg(name: str, value: Any) -> bool:
    """A flag: a bool, or the integers 0 and 1 (ONNX's ``is_causal``); nothing else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"Pattern: {name}: expected a bool (or 0/1), got {value!r}")


def _lengths(lq: Any, lk: Any, heads: Any = 1) -> tuple[int, int, int]:
    """Checked ``(lq, lk, heads)`` of a query method (``lk`` defaults to ``lq``)."""
    lq = _int_arg("lq", lq, 1, attributes.MAX_LENGTH)
    lk = lq if lk is None else _int_arg("lk", lk, 1, attributes.MAX_LENGTH)
    return lq, lk, _int_arg("heads", heads, 1)


def _band_text(left: int, right: int, causal: bool, short: bool = False) -> str:
    """The local band in words (``short``: the label's form, e.g. ``sliding window ±4``)."""
    if causal:
        if left == -1:
            return "causal dense" if short else "every key up to the query (causal)"
        keys = f"causal sliding window of {left + 1} keys"
        return keys if short else f"{keys} (the query and {left} before it)"
    if left == -1 and right == -1:
        return "dense" if short else "every key"
    if left == right:
        return f"sliding window ±{left}" if short else f"keys within ±{left} of the query"
    lo = "every key" if left == -1 else f"{left} keys"
    hi = "every key" if right == -1 else f"{right}"
    if short:
        return f"window {lo} before to {hi} after"
    return f"{lo} before to {hi} after the query"


def _first_tokens(n: int) -> str:
    return "the first token" if n == 1 else f"the first {n} tokens"


def _layout_tensor(x: Any) -> torch.Tensor:
    try:
        t = x.detach().to("cpu") if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"Pattern: block_indices: expected an integer array [Hl, nqb, K] or a callable "
            f"layout(lq, lk), got {type(x).__name__}"
        ) from e
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        # Casting would silently truncate 1.7 to block 1.
        raise ValueError(f"Pattern: block_indices: expected integer entries, got {t.dtype}")
    if t.dim() == 2:  # [nqb, K] shared by all heads
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(
            f"Pattern: block_indices: expected rank 3 [Hl, nqb, K] (or 2: [nqb, K]), got shape "
            f"{list(t.shape)}"
        )
    return t.to(torch.int32)


@dataclass(frozen=True)
class Pattern:
    """The attributes of one ``spattn::SparseAttention`` node.

    Fields are the op attributes with the spec's defaults (the default pattern is dense
    attention). ``block_indices`` is an optional fixed layout ``[Hl, ceil(Lq/block_size), K]``
    (array or tensor; it depends on ``Lq``) or a callable ``layout(lq, lk) -> array`` evaluated
    at the length of each call or export.

    Examples
    --------
    >>> p = Pattern.longformer(attention_window=512, num_global=2)
    >>> p.attributes()["window_left"], p.attributes()["num_global"]
    (256, 2)
    """

    window_left: int = _DEFAULT["window_left"]
    window_right: int = _DEFAULT["window_right"]
    causal: bool = False
    num_global: int = _DEFAULT["num_global"]
    stride: int = _DEFAULT["stride"]
    block_size: int = _DEFAULT["block_size"]
    num_random: int = _DEFAULT["num_random"]
    seed: int = _DEFAULT["seed"]
    scale: float | None = None
    block_indices: Any = field(default=None, compare=False, repr=False)
    name: str = field(default="", compare=False)
    softcap: float = _DEFAULT["softcap"]
    chunk_size: int = _DEFAULT["chunk_size"]

    def __post_init__(self) -> None:
        # Every attribute of the table, checked by its own rule (type and range), so that
        # block_size=1.7, seed=1.5 or window_left=True are errors naming the field.
        for a in attributes.PATTERN_ATTRIBUTES:
            value = getattr(self, a.name)
            if a.name == "scale" and value is None:
                continue
            if a.name == "causal" and isinstance(value, (bool, np.bool_)):
                value = int(value)
            if isinstance(value, np.generic):
                value = value.item()
            value = a.check(value, "Pattern")
            object.__setattr__(self, a.name, bool(value) if a.name == "causal" else value)
        if not isinstance(self.name, str):
            raise ValueError(f"Pattern: name: expected a string, got {self.name!r}")
        bi = self.block_indices
        if bi is not None and not callable(bi):
            object.__setattr__(self, "block_indices", _layout_tensor(bi))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def dense(cls, causal: bool = False) -> Pattern:
        """Dense attention (causal with ``causal=True``).

        Examples
        --------
        >>> Pattern.dense(causal=True).attributes()["causal"]
        1
        """
        causal = _bool_arg("causal", causal)
        return cls(causal=causal, name="causal dense" if causal else "dense")

    @classmethod
    def sliding_window(cls, left: int, right: int | None = None, causal: bool = False) -> Pattern:
        """Keys ``p - left <= j <= p + right`` (``right`` defaults to ``left``).

        Examples
        --------
        >>> Pattern.sliding_window(4).attributes()["window_right"]
        4
        """
        left = _attr_arg("left", left, "window_left")
        right = left if right is None else _attr_arg("right", right, "window_right")
        causal = _bool_arg("causal", causal)
        return cls(window_left=left, window_right=right, causal=causal, name="sliding window")

    @classmethod
    def causal_sliding_window(cls, window: int) -> Pattern:
        """Hugging Face semantics: ``window`` keys including the query (``p - j < window``).

        Examples
        --------
        >>> Pattern.causal_sliding_window(4096).attributes()["window_left"]
        4095
        """
        window = _int_arg("window", window, 1, attributes.INT32_MAX + 1)
        return cls(window_left=window - 1, causal=True, name="causal sliding window")

    @classmethod
    def chunked(cls, chunk_size: int, causal: bool = True) -> Pattern:
        """Chunked attention (Llama 4's ``attention_chunk_size``): the positions form runs of
        ``chunk_size`` (counted from the first valid key, ``key_starts``), and a query sees only
        the keys of its own run (causal by default: the keys up to the query).

        Examples
        --------
        >>> Pattern.chunked(4).token_mask(6)[0].int().tolist()[4:]
        [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]]
        """
        chunk_size = _int_arg("chunk_size", chunk_size, 1)
        causal = _bool_arg("causal", causal)
        name = "causal chunked attention" if causal else "chunked attention"
        return cls(chunk_size=chunk_size, causal=causal, name=name)

    @classmethod
    def longformer(cls, attention_window: int, num_global: int = 0) -> Pattern:
        """Longformer: ``|p - j| <= attention_window / 2`` plus the first ``num_global`` tokens.

        Global tokens chosen per input (Longformer's ``global_attention_mask``: question tokens,
        CLS, ...) are not part of the pattern: pass them at each call as ``global_mask``
        (:func:`spattn.sparse_attention`) or ``global_attention_mask``
        (:class:`spattn.SparseMultiheadAttention`); they combine with ``num_global`` by union.

        Examples
        --------
        >>> Pattern.longformer(512, 1).attributes()["window_right"]
        256
        >>> import torch
        >>> from spattn import sparse_attention
        >>> q = torch.randn(2, 4, 64, 16)
        >>> glob = torch.zeros(2, 64, dtype=torch.int32)
        >>> glob[0, 5] = glob[1, 9] = 1  # per-input global tokens
        >>> sparse_attention(q, q, q, Pattern.longformer(8), global_mask=glob).shape
        torch.Size([2, 4, 64, 16])
        """
        attention_window = _int_arg(
            "attention_window", attention_window, 0, 2 * attributes.INT32_MAX
        )
        num_global = _attr_arg("num_global", num_global, "num_global")
        if attention_window % 2:
            raise ValueError(
                f"Pattern: attention_window: expected an even number >= 0, got {attention_window}"
            )
        half = attention_window // 2
        return cls(window_left=half, window_right=half, num_global=num_global, name="Longformer")

    @classmethod
    def bigbird(
        cls,
        block_size: int,
        num_local_blocks: int = 3,
        num_global_blocks: int = 1,
        num_random: int = 2,
        seed: int = 0,
        exact_blocks: bool = False,
    ) -> Pattern:
        """BigBird: local blocks, global blocks and random blocks.

        With ``exact_blocks=False`` the local blocks are the token band
        ``±block_size * (num_local_blocks - 1) / 2`` (dynamic lengths); with ``True`` they are a
        listed layout of whole blocks ``qb - w ... qb + w`` (evaluated per length).

        Examples
        --------
        >>> a = Pattern.bigbird(64).attributes()
        >>> a["window_left"], a["num_global"], a["num_random"]
        (64, 64, 2)
        """
        block_size = _attr_arg("block_size", block_size, "block_size")
        num_local_blocks = _int_arg("num_local_blocks", num_local_blocks, 1)
        num_global_blocks = _int_arg("num_global_blocks", num_global_blocks, 0)
        num_random = _attr_arg("num_random", num_random, "num_random")
        seed = _attr_arg("seed", seed, "seed")
        exact_blocks = _bool_arg("exact_blocks", exact_blocks)
        # The band and the global tokens become int32 attributes.
        for what, n in (
            ("num_local_blocks", (num_local_blocks - 1) // 2 * block_size),
            ("num_global_blocks", num_global_blocks * block_size),
        ):
            if n > attributes.INT32_MAX:
                raise ValueError(
                    f"Pattern: {what}: expected {what} * block_size to fit in int32, got {n}"
                )
        if num_local_blocks % 2 == 0:
            raise ValueError(
                f"Pattern: num_local_blocks: expected an odd number >= 1, got {num_local_blocks}"
            )
        w = (num_local_blocks - 1) // 2
        common: dict[str, Any] = dict(
            block_size=block_size,
            num_global=num_global_blocks * block_size,
            num_random=num_random,
            seed=seed,
        )
        if not exact_blocks:
            return cls(
                window_left=w * block_size, window_right=w * block_size, name="BigBird", **common
            )

        def layout(lq: int, lk: int) -> torch.Tensor:
            nqb, nkb = -(-lq // block_size), -(-lk // block_size)
            rows = torch.arange(nqb).view(-1, 1) + torch.arange(-w, w + 1).view(1, -1)
            rows = torch.where((rows >= 0) & (rows < nkb), rows, torch.full_like(rows, -1))
            return rows.to(torch.int32).unsqueeze(0)

        return cls(block_indices=layout, name="BigBird (exact blocks)", **common)

    @classmethod
    def strided(cls, stride: int, causal: bool = True) -> Pattern:
        """Sparse Transformer strided: the last ``stride`` keys plus every ``stride``-th key.

        Non-causal: the band is ``±(stride - 1)``.

        Examples
        --------
        >>> a = Pattern.strided(128).attributes()
        >>> a["window_left"], a["stride"], a["causal"]
        (127, 128, 1)
        """
        stride = _int_arg("stride", stride, 1)
        causal = _bool_arg("causal", causal)
        return cls(
            window_left=stride - 1,
            window_right=-1 if causal else stride - 1,
            causal=causal,
            stride=stride,
            name="Sparse Transformer strided",
        )

    @classmethod
    def _block_layout_ctor(
        cls,
        block_indices: Any,
        block_size: int,
        causal: bool = False,
    ) -> Pattern:
        """An explicit block layout: ``block_indices [Hl, nqb, K]`` (or ``[nqb, K]``), ``-1`` pads.

        ``block_indices`` may be a callable ``layout(lq, lk)`` returning such an array.

        Examples
        --------
        >>> p = Pattern.block_layout([[[0, -1], [0, 1]]], block_size=16)
        >>> p.layout_at(32, 32).shape
        torch.Size([1, 2, 2])
        """
        block_size = _attr_arg("block_size", block_size, "block_size")
        causal = _bool_arg("causal", causal)
        if block_indices is None:
            raise ValueError("Pattern: block_indices: expected a layout [Hl, nqb, K], got None")
        return cls(
            block_indices=block_indices, block_size=block_size, causal=causal, name="block layout"
        )

    @classmethod
    def from_hf_sliding_window(
        cls, sliding_window: int, legacy_flash_attn: bool = False
    ) -> Pattern:
        """Hugging Face ``config.sliding_window`` (Mistral, Qwen2, Gemma): ``p - j < W``, causal.

        ``legacy_flash_attn=True`` maps the FlashAttention-2 path of transformers < 4.42
        (``p - j <= W``).

        Examples
        --------
        >>> Pattern.from_hf_sliding_window(4096).window_left
        4095
        """
        sliding_window = _int_arg("sliding_window", sliding_window, 1, attributes.INT32_MAX)
        if _bool_arg("legacy_flash_attn", legacy_flash_attn):
            return cls(
                window_left=sliding_window,
                causal=True,
                name="Hugging Face sliding window (FlashAttention-2, < 4.42)",
            )
        p = cls.causal_sliding_window(sliding_window)
        return dataclasses.replace(p, name="Hugging Face sliding window")

    @classmethod
    def from_flash_attn_window(cls, window_size: tuple[int, int], causal: bool = False) -> Pattern:
        """FlashAttention ``window_size=(left, right)`` (``-1`` unbounded, bottom-right aligned).

        Examples
        --------
        >>> Pattern.from_flash_attn_window((128, 0)).attributes()["window_right"]
        0
        """
        if isinstance(window_size, (str, bytes)) or not hasattr(window_size, "__len__"):
            raise ValueError(
                f"Pattern: window_size: expected a pair (left, right), got {window_size!r}"
            )
        if len(window_size) != 2:
            raise ValueError(
                f"Pattern: window_size: expected a pair (left, right), got {window_size!r}"
            )
        left = _attr_arg("window_size[0]", window_size[0], "window_left")
        right = _attr_arg("window_size[1]", window_size[1], "window_right")
        return cls(
            window_left=int(left),
            window_right=int(right),
            causal=_bool_arg("causal", causal),
            name="FlashAttention window",
        )

    @classmethod
    def from_onnx_attention(
        cls, left_window_size: int = -1, right_window_size: int = -1, is_causal: int = 0
    ) -> Pattern:
        """ONNX ``Attention`` (opset 25) ``left_window_size``/``right_window_size``/``is_causal``.

        Examples
        --------
        >>> Pattern.from_onnx_attention(16, 0, 1).attributes()["causal"]
        1
        """
        return cls(
            window_left=int(_attr_arg("left_window_size", left_window_size, "window_left")),
            window_right=int(_attr_arg("right_window_size", right_window_size, "window_right")),
            causal=_bool_arg("is_causal", is_causal),
            name="ONNX Attention window",
        )

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any], block_indices: Any = None) -> Pattern:
        """Inverse of :meth:`attributes` (unknown keys such as ``plugin_version`` are ignored).

        Examples
        --------
        >>> p = Pattern.sliding_window(3)
        >>> Pattern.from_attributes(p.attributes()) == p
        True
        """
        if not isinstance(attrs, Mapping):
            raise ValueError(
                f"Pattern: attrs: expected a mapping {{name: value}}, got {type(attrs).__name__}"
            )
        kw: dict[str, Any] = {}
        for a in attributes.PATTERN_ATTRIBUTES:
            if a.name not in attrs:
                continue
            value = attrs[a.name]
            if isinstance(value, np.generic):
                value = value.item()
            kw[a.name] = value
        if "scale" in kw and kw["scale"] == 0.0:
            kw["scale"] = None
        if "causal" in kw:
            kw["causal"] = attributes.attribute("causal").check(kw["causal"], "Pattern")
        return cls(block_indices=block_indices, **kw)

    # ------------------------------------------------------------------ queries
    @property
    def has_layout(self) -> bool:
        """True when the pattern carries listed blocks (``block_indices``)."""
        return self.block_indices is not None

    @property
    def local_on(self) -> bool:
        """The spec's "local off" rule, for a call that passes this pattern's own layout."""
        other = self.num_global > 0 or self.stride > 0 or self.num_random > 0 or self.has_layout
        unbounded = self.window_left == -1 and self.window_right == -1
        return self.chunk_size > 0 or not (unbounded and other)

    def replace(self, **changes: Any) -> Pattern:
        """A copy with some fields changed.

        Examples
        --------
        >>> Pattern.sliding_window(2).replace(causal=True).causal
        True
        """
        return dataclasses.replace(self, **changes)

    def layout_at(self, lq: int, lk: int | None = None) -> torch.Tensor | None:
        """The ``block_indices`` (int32 ``[Hl, ceil(lq/block_size), K]``) for lengths ``(lq, lk)``.

        Examples
        --------
        >>> Pattern.bigbird(4, exact_blocks=True).layout_at(8, 8).tolist()
        [[[-1, 0, 1], [0, 1, -1]]]
        """
        lq, lk, _ = _lengths(lq, lk)
        bi = self.block_indices
        if bi is None:
            return None
        if callable(bi):
            bi = _layout_tensor(bi(lq, lk))
        nqb = -(-lq // self.block_size)
        if bi.shape[1] != nqb:
            raise ValueError(
                f"block_indices: the layout has {bi.shape[1]} query blocks, but Lq={lq} with "
                f"block_size={self.block_size} needs {nqb}; pass a callable layout(lq, lk) "
                "for lengths other than the one the layout was made for"
            )
        return bi

    def attributes(self) -> dict[str, Any]:
        """The node's ONNX attributes: the integer ones, ``scale``/``softcap`` when set.

        Examples
        --------
        >>> Pattern.dense().attributes()["window_left"]
        -1
        """
        attrs: dict[str, Any] = {}
        for a in attributes.PATTERN_ATTRIBUTES:
            value = getattr(self, a.name)
            if value is None:  # scale unset: the default 1/sqrt(D)
                continue
            value = a.python_type(value)
            if a.always_written or value != a.default:
                attrs[a.name] = value
        return attrs

    def token_mask(
        self,
        lq: int,
        lk: int | None = None,
        heads: int = 1,
        key_lengths: Any = None,
    ) -> torch.Tensor:
        """The spec's mask: bool ``[heads, lq, lk]``, or ``[B, heads, lq, lk]`` with key lengths.

        Examples
        --------
        >>> Pattern.dense(causal=True).token_mask(3)[0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
        """
        lq, lk, heads = _lengths(lq, lk, heads)
        m = reference.allowed_mask(self, lq, lk, heads, key_lengths, self.layout_at(lq, lk))
        return m if key_lengths is not None else m[0]

    def block_layout_mask(
        self, lq: int, lk: int | None = None, block_size: int | None = None, heads: int = 1
    ) -> torch.Tensor:
        """Bool ``[heads, ceil(lq/bs), ceil(lk/bs)]``: blocks holding at least one allowed pair.

        Computed a block row at a time (memory ``O(bs * lk)``). ``block_size`` defaults to the
        pattern's.

        Examples
        --------
        >>> Pattern.sliding_window(0).block_layout_mask(8, block_size=4)[0].int().tolist()
        [[1, 0], [0, 1]]
        """
        from . import blocksparse

        lq, lk, heads = _lengths(lq, lk, heads)
        bs = self.block_size if block_size is None else _int_arg("block_size", block_size, 1)
        return blocksparse.block_any_mask(self, lq, lk, heads, bs)

    def density(self, lq: int, lk: int | None = None, heads: int = 1) -> float:
        """Fraction of allowed (query, key) pairs, counted without an ``lq x lk`` allocation.

        Examples
        --------
        >>> Pattern.dense(causal=True).density(4)
        0.625
        """
        from . import blocksparse

        lq, lk, heads = _lengths(lq, lk, heads)
        per_head = blocksparse.count_allowed_bands(self, lq, lk)
        if per_head is not None:  # every head has the same mask: closed form per row
            return per_head / float(lq * lk)
        return blocksparse.count_allowed(self, lq, lk, heads) / float(heads * lq * lk)

    block_layout = _class_or_instance(_block_layout_ctor, block_layout_mask)

    def components(self, global_mask: bool = False) -> list[str]:
        """The mask components this pattern switches on, in the spec's order: ``window``,
        ``global``, ``strided``, ``random``, ``listed`` (``global_mask``: the node also takes the
        per-input ``global_mask`` input, whose presence switches the band off like ``num_global``).

        Examples
        --------
        >>> Pattern.longformer(8, 2).components()
        ['window', 'global']
        >>> Pattern().components(global_mask=True)
        ['global']
        """
        has_global = self.num_global > 0 or global_mask
        others = has_global or self.stride > 0 or self.num_random > 0 or self.has_layout
        on = {
            "window": self.chunk_size > 0
            or not (self.window_left == -1 and self.window_right == -1 and others),
            "global": has_global,
            "strided": self.stride > 0,
            "random": self.num_random > 0,
            "listed": self.has_layout,
        }
        return [c for c, v in on.items() if v]

    def _band(self, short: bool) -> str:
        """The local component in words: the band, and the chunks that bound it."""
        text = _band_text(self.window_left, self.window_right, self.causal, short)
        if self.chunk_size > 0:
            text += f" within chunks of {self.chunk_size}"
        return text

    def component_text(self, component: str, global_mask: bool = False) -> str:
        """What one component of :meth:`components` allows, in words.

        Examples
        --------
        >>> Pattern.sliding_window(4, 2).component_text("window")
        'window: 4 keys before to 2 after the query'
        """
        bs = self.block_size
        if component == "window":
            return "window: " + self._band(short=False)
        if component == "global":
            who = []
            if self.num_global:
                who.append(_first_tokens(self.num_global))
            if global_mask:
                who.append("tokens marked in the global_mask input (per input)")
            return "global: " + " and ".join(who) + " attend and are attended by every token"
        if component == "strided":
            return f"strided: keys a multiple of {self.stride} before or after the query"
        if component == "random":
            return (
                f"random: {self.num_random} key block(s) of {bs} tokens per query block "
                f"(seed {self.seed}, per head)"
            )
        if component == "listed":
            return f"listed: key blocks of {bs} tokens named in block_indices"
        raise ValueError(f"component: expected one of {self.components(True)}, got {component!r}")

    def family(self, global_mask: bool = False) -> str:
        """The pattern family: the constructor's name, else one recognised from the attributes
        (Longformer, BigBird, Sparse Transformer strided, ...); ``""`` when none fits.

        Examples
        --------
        >>> attrs = {"window_left": 256, "window_right": 256, "num_global": 64}
        >>> Pattern.from_attributes(attrs).family()
        'Longformer'
        """
        comps = self.components(global_mask)
        if self.name and comps == self.components():
            return self.name  # not when the global_mask input switches the band off

        if self.chunk_size > 0:  # the families below have no chunks
            if comps != ["window"]:
                return ""
            return "causal chunked attention" if self.causal else "chunked attention"
        wl, wr, sym = self.window_left, self.window_right, self.window_left == self.window_right
        if comps == ["window", "global"] and sym and wl >= 0 and not self.causal:
            return "Longformer"
        if comps == ["global"] and global_mask and not self.num_global and not self.causal:
            return "global tokens only (Longformer's global attention)"
        if (
            comps[:1] == ["window"]
            and {"global", "random"} <= set(comps)
            and "strided" not in comps
            and sym
            and wl >= 0
            and wl % self.block_size == 0
            and self.num_global % self.block_size == 0
        ):
            return "BigBird" + (" (exact blocks)" if "listed" in comps else "")
        if comps == ["window", "strided"] and wl == self.stride - 1:
            return "Sparse Transformer strided"
        if comps == ["listed"]:
            return "block layout"
        if comps == ["window"]:
            if wl == -1 and (wr == -1 or self.causal):
                return "causal dense" if self.causal else "dense"
            return "causal sliding window" if self.causal else "sliding window"
        return ""

    def label(self, global_mask: bool = False) -> str:
        """A descriptive one-line label: the family (when one fits) and what each component
        allows, e.g. ``'Longformer: sliding window ±256 + the first 64 tokens global'``.

        ``global_mask``: the node also takes the per-input ``global_mask`` input.

        Examples
        --------
        >>> Pattern.longformer(512, 64).label()
        'Longformer: sliding window ±256 + the first 64 tokens global'
        >>> Pattern.dense(causal=True).label()
        'causal dense'
        """
        parts = []
        comps = self.components(global_mask)
        for c in comps:
            if c == "window":
                parts.append(self._band(short=True))
            elif c == "global":
                if self.num_global:
                    parts.append(f"{_first_tokens(self.num_global)} global")
                if global_mask:
                    parts.append("per-input global tokens (global_mask)")
            elif c == "strided":
                parts.append(f"stride {self.stride}")
            elif c == "random":
                parts.append(f"{self.num_random} random blocks of {self.block_size}")
            elif c == "listed":
                parts.append(f"listed blocks of {self.block_size} (block_indices)")
        text = " + ".join(parts)
        if self.causal and "window" not in comps:
            text = "causal: " + text
        if self.softcap:
            text += f", softcap {self.softcap:g}"
        fam = self.family(global_mask)
        if fam and not text.lower().startswith(fam.lower()):
            text = f"{fam}: {text}"
        return text

    def describe(self, global_mask: bool = False) -> str:
        """A short one-line description: :meth:`label`, then the attributes.

        Examples
        --------
        >>> Pattern.sliding_window(4).describe()
        'sliding window ±4 (window_left=4 window_right=4)'
        """
        attrs = self.attributes()
        defaults = attributes.defaults()
        needs_bs = self.num_random > 0 or self.has_layout
        parts = [
            f"{k}={v}"
            for k, v in attrs.items()
            if defaults.get(k) != v and (k != "block_size" or needs_bs) and k != "seed"
        ]
        if self.num_random > 0:
            parts.append(f"seed={self.seed}")
        if self.has_layout:
            parts.append(
                "block_indices="
                + (
                    "callable"
                    if callable(self.block_indices)
                    else str(list(self.block_indices.shape))
                )
            )
        text = " ".join(parts) if parts else "no attributes"
        return f"{self.label(global_mask=global_mask)} ({text})"

    def __str__(self) -> str:
        return self.describe()

    def figure(
        self,
        lq: int,
        lk: int | None = None,
        head: int = 0,
        *,
        global_tokens: Any = None,
        key_length: int | None = None,
    ) -> Any:
        """A matplotlib ``Figure`` of the token mask (``lq, lk <= 1024``) or block layout.

        Each allowed pair (or block) is coloured by the component that allows it, with a legend;
        the title states the density of what is drawn. ``global_tokens``: positions marked in a
        ``global_mask`` input (None: no such input); ``key_length``: keys from it on are
        padding. See :mod:`spattn.plotting`.

        Examples
        --------
        >>> fig = Pattern.sliding_window(2).figure(16)
        >>> fig.axes[0].get_xlabel()
        'key position j (token)'
        """
        from . import plotting

        return plotting.figure(
            self, lq, lk, head, global_tokens=global_tokens, key_length=key_length
        )

    def plot(
        self,
        lq: int,
        path: str,
        lk: int | None = None,
        head: int = 0,
        *,
        global_tokens: Any = None,
        key_length: int | None = None,
    ) -> str:
        """Write :meth:`figure` to ``path`` (PNG, or any format matplotlib knows by its suffix).

        Examples
        --------
        >>> Pattern.sliding_window(8).plot(128, "/tmp/sw.png")  # doctest: +SKIP
        '/tmp/sw.png'
        """
        fig = self.figure(lq, lk, head, global_tokens=global_tokens, key_length=key_length)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        return path
