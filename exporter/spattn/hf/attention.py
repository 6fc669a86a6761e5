"""``attn_implementation="spattn"``: Hugging Face attention through ``spattn::SparseAttention``.

transformers calls an attention function with the module, ``query [B, Hq, Lq, D]``,
``key``/``value [B, Hkv, Lk, D]`` (the cache already appended), the mask that the registered mask
function made, and the layer's own keyword arguments (``scaling``, ``sliding_window``, ``softcap``,
``s_aux``...). Each call maps those onto one op call:

- causal: the ``is_causal`` keyword, else ``module.is_causal``; ``config.is_causal = False`` (the
  "decoder used bidirectionally" switch of ``masking_utils``) makes it non-causal;
- ``sliding_window=W``: Hugging Face's masks allow ``W`` keys counting the query, ``p - j < W``
  (causal) and ``|p - j| < W`` (non-causal layers: ModernBERT passes ``local_attention / 2 + 1``,
  Gemma 3 bidirectional passes ``W`` with the same exclusive overlay), so ``window_left = W - 1``
  (and ``window_right = W - 1`` when non-causal). The one exception is a causal layer whose config
  has ``is_causal = False``: ``masking_utils`` then uses ``|p - j| <= config.sliding_window``.
  A layer whose call passes no ``sliding_window`` at all (Qwen2-MoE, PhiMoE: the window is in
  their masks only) takes its layer's window by the config, the rule the exported cache follows
  too, or the module's own ``sliding_window`` (:func:`layer_window`).
- ``scaling`` is the op's ``scale``; ``softcap`` the ``softcap`` attribute, ``s_aux`` (gpt-oss)
  the ``sinks`` input.
- chunked layers (Llama 4's ``attention_chunk_size``, :func:`layer_chunk`) set ``chunk_size``,
  with ``key_starts`` placing the chunks where transformers does (:func:`chunk_key_starts`).

The mask function (registered for ``AttentionMaskInterface``) returns the 2-D padding mask
``[B, M]`` unchanged (``M`` = past + new tokens). A layer's keys are the last ``Lk`` positions of
it (a cache that keeps the most recent tokens, as transformers' dynamic and sliding caches do);
:func:`padding_inputs` turns it into ``key_starts`` / ``key_lengths``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..functional import _is_tracing, key_range_from_padding_mask, sparse_attention
from ..patterns import Pattern

__all__ = [
    "ATTN_IMPLEMENTATION",
    "spattn_attention_forward",
    "spattn_mask",
    "layer_pattern",
    "layer_chunk",
    "chunk_key_starts",
    "config_window",
    "layer_window",
    "padding_inputs",
]

ATTN_IMPLEMENTATION = "spattn"


def _is_tensor_value(x: Any) -> bool:
    return isinstance(x, torch.Tensor) or type(x).__name__ == "SymInt"


# Pieces of a transformers mask function (masking_utils) that change which keys a query sees
# beyond causal, bidirectional, sliding window and padding. The mask function only returns the
# padding mask and each layer's call brings its pattern, so one of these would be silently lost:
# a call whose mask function is built from one is an error instead.
_UNSUPPORTED_MASK_PARTS = {
    "or_masks": "an or_mask_function overlay (keys allowed beyond the causal or sliding mask, "
    "such as bidirectional image tokens)",
    "blockwise_overlay": "block-wise bidirectional attention over block_sequence_ids",
    "packed_sequence_mask_function": "packed sequences (position_ids restarting inside a row: "
    "each sequence attends only to itself)",
    "remap_positions_for_packed_sequence": "packed sequences (position_ids restarting inside a "
    "row: each sequence attends only to itself)",
}


def _mask_parts(fn: Any, depth: int = 0) -> list[str]:
    """The functions a masking_utils mask function is built from: its own qualified name's
    outer function (``chunked_overlay`` for ``chunked_overlay.<locals>.inner_mask``) and, through
    its closure (``and_masks``/``or_masks`` keep their parts there), those of its parts."""
    names = [getattr(fn, "__qualname__", type(fn).__name__).split(".<locals>")[0]]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        for part in v if isinstance(v, tuple) else (v,):
            if callable(part) and not isinstance(part, torch.Tensor) and depth < 8:
                names += _mask_parts(part, depth + 1)
    return names


def spattn_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: Any = 0,
    kv_offset: Any = 0,
    mask_function: Any = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """The mask function of ``attn_implementation="spattn"``: the 2-D padding mask, as is.

    The pattern (causal, window, globals) is not a mask here: each layer's attention call reads
    it from its module and keyword arguments. The checks below reject the cache layouts whose
    keys are not the most recent positions of the mask (a static cache, pre-allocated).
    """
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask: attn_implementation='spattn' takes a 2-D padding mask [batch, keys], "
            f"got shape {list(attention_mask.shape)}"
        )
    if mask_function is not None:
        for part in _mask_parts(mask_function):
            if part in _UNSUPPORTED_MASK_PARTS:
                raise NotImplementedError(
                    f"attn_implementation='spattn': this layer's mask uses "
                    f"{_UNSUPPORTED_MASK_PARTS[part]} (transformers' {part}), which the op cannot "
                    "express, so this model cannot run through spattn (in PyTorch, "
                    "attn_implementation='eager' or 'sdpa' runs it)"
                )
    ints = (q_length, kv_length, q_offset, kv_offset)
    if not _is_tracing() and not any(_is_tensor_value(v) for v in ints):
        if q_offset + q_length != kv_offset + kv_length:
            raise NotImplementedError(
                "attn_implementation='spattn': the cache's keys must end at the last query "
                f"(q_offset {q_offset} + q_length {q_length} != kv_offset {kv_offset} + "
                f"kv_length {kv_length}); a pre-allocated StaticCache is not supported, use the "
                "default DynamicCache"
            )
        if attention_mask is not None and attention_mask.shape[-1] < kv_offset + kv_length:
            raise ValueError(
                f"attention_mask: expected at least {kv_offset + kv_length} columns (past + new "
                f"tokens), got {attention_mask.shape[-1]}"
            )
    if attention_mask is None:
        if mask_function is not None and "chunked_overlay" in _mask_parts(mask_function):
            # A chunked layer places its chunks by the mask's width (chunk_key_starts): an
            # unpadded call gets an all-valid mask of the sequence's length.
            device = kwargs.get("device")
            return torch.ones(batch_size, kv_offset + kv_length, dtype=torch.bool, device=device)
        return None
    return attention_mask.to(torch.bool)


def chunk_key_starts(
    attention_mask: torch.Tensor | None,
    lk: Any,
    chunk_size: int,
    key_starts: torch.Tensor | None,
    key_lengths: torch.Tensor | None,
) -> torch.Tensor | None:
    """``key_starts`` of a chunked layer (Llama 4) with ``lk`` keys: the op counts its chunks
    from ``key_starts[b]``, transformers from the row's first real token of the whole sequence
    (``left_padding`` of ``chunked_overlay``), which a cache that dropped old keys no longer holds.

    The layer's keys are the last ``lk`` of the mask's ``M`` columns (``dropped = M - lk``).
    Where the left padding ``pad_b >= dropped`` the valid keys start at ``pad_b - dropped``, the
    chunks' origin already. Otherwise every kept key is valid and the origin lies before them:
    ``key_starts = (pad_b - dropped) mod C`` keeps the origin modulo ``C`` and marks invalid only
    kept keys before the first chunk boundary, which no query of the call sees: a cache drops keys
    only once it holds ``C - 1``, so the first query sits at least ``C - 1`` keys past the first
    kept one, beyond that boundary (docs/op-spec.md, "Chunks").
    """
    if attention_mask is None:  # no padding and no dropped keys known: chunks from key 0
        return key_starts
    m = attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0
    pad = (m.to(torch.int32).cumsum(-1) == 0).sum(-1).to(torch.int32)  # leading padding
    dropped = m.shape[-1] - lk
    x = pad - dropped
    local = key_starts if key_starts is not None else torch.zeros_like(x)
    ks = torch.where(x >= 0, local.to(torch.int32), torch.remainder(x, chunk_size))
    if key_lengths is not None:
        ks = torch.minimum(ks, key_lengths.to(torch.int32))
    if not _is_tracing() and not bool((ks > 0).any()):
        return None
    return ks.to(torch.int32)


def padding_inputs(
    attention_mask: torch.Tensor | None, lk: Any, batch: Any = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(key_starts, key_lengths)`` int32 ``[B]`` of a layer with ``lk`` keys from the 2-D mask.

    The layer's keys are the last ``lk`` columns of the mask (the cache keeps the most recent
    tokens). Valid keys must be one contiguous run (left padding, right padding or both); a mask
    with holes cannot be expressed by the op: eagerly it is a ``ValueError``, in an exported
    graph the op rejects it at run time (see ``functional.key_range_from_padding_mask``).
    Eagerly, ``key_starts`` is left out when no row is left-padded.
    """
    if attention_mask is None:
        return None, None
    m = attention_mask
    if not _is_tracing() and m.shape[-1] < lk:
        raise ValueError(
            f"attention_mask: expected at least {lk} columns (the layer's keys), got {m.shape[-1]}"
        )
    m = m[:, m.shape[-1] - lk :]
    starts, lengths = key_range_from_padding_mask(attention_mask=m)
    if not _is_tracing() and not bool((starts > 0).any()):
        return None, lengths
    return starts, lengths


def _config_value(module: Any, name: str, default: Any = None) -> Any:
    cfg = getattr(module, "config", None)
    return getattr(cfg, name, default) if cfg is not None else default


# The default of spattn_attention_forward's ``sliding_window``: the call did not pass one (a full
# layer passes ``None``).
_NOT_PASSED: Any = object()


def config_window(config: Any, layer_idx: int) -> int | None:
    """The sliding window ``W`` of decoder layer ``layer_idx`` by its config, or ``None`` (full).

    ``config.layer_types`` when the config has them (``"sliding_attention"`` layers slide), else
    ``config.sliding_window`` on every layer (Mistral, Phi-3, PhiMoE build every layer's mask with
    it). The exported cache keeps ``W - 1`` keys of such a layer by the same rule
    (``export.layer_windows``).
    """
    w = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        slides = 0 <= layer_idx < len(types) and types[layer_idx] == "sliding_attention"
        return int(w) if slides and w else None
    return int(w) if w else None


def layer_chunk(module: Any) -> int | None:
    """The chunk size of a chunked-attention layer (Llama 4's ``attention_chunk_size``, on the
    layers ``config.layer_types`` names ``"chunked_attention"``; on every layer of a config that
    has no ``layer_types`` and no ``sliding_window``, as ``masking_utils`` decides), or ``None``."""
    cfg, idx = getattr(module, "config", None), getattr(module, "layer_idx", None)
    c = getattr(cfg, "attention_chunk_size", None) if cfg is not None else None
    if not c:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        chunked = isinstance(idx, int) and 0 <= idx < len(types)
        return int(c) if chunked and types[idx] == "chunked_attention" else None
    return None if getattr(cfg, "sliding_window", None) else int(c)


def layer_window(module: Any) -> int | None:
    """The window of a layer whose attention call passes no ``sliding_window``.

    Some families build a sliding mask for their sliding layers but never pass the window to the
    attention function (Qwen2-MoE leaves ``self.sliding_window`` out of the call; PhiMoE masks
    every layer with ``config.sliding_window``), so eager attention slides and a function reading
    only the call would not. The window their masks use: by ``config.layer_types`` where the
    config has them (what ``masking_utils`` follows), else the module's own positive
    ``sliding_window``, else ``config.sliding_window`` on every layer (:func:`config_window`).
    """
    cfg, idx = getattr(module, "config", None), getattr(module, "layer_idx", None)
    typed = cfg is not None and getattr(cfg, "layer_types", None) is not None
    if typed and isinstance(idx, int):
        return config_window(cfg, idx)
    w = getattr(module, "sliding_window", None)
    if isinstance(w, int) and not isinstance(w, bool) and w > 0:
        return w
    if cfg is None or typed:  # typed without a layer index: not a decoder layer of the config
        return None
    return config_window(cfg, -1)


def layer_pattern(
    module: Any,
    sliding_window: int | None = None,
    is_causal: bool | None = None,
    scaling: float | None = None,
    softcap: float | None = None,
) -> Pattern:
    """The :class:`Pattern` of one Hugging Face attention call (see the module docstring).

    Examples
    --------
    >>> import types
    >>> m = types.SimpleNamespace(is_causal=True)
    >>> layer_pattern(m, sliding_window=4096).window_left
    4095
    """
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    cfg_causal = _config_value(module, "is_causal", True)
    window_left = window_right = -1
    if sliding_window is not None:
        w = int(sliding_window)
        if w < 1:
            raise ValueError(f"sliding_window: expected >= 1, got {w}")
        if causal and cfg_causal is False:
            # masking_utils builds a bidirectional sliding mask from config.sliding_window,
            # inclusive: |p - j| <= W
            cw = _config_value(module, "sliding_window", w)
            window_left = window_right = int(cw)
        elif causal:
            window_left = w - 1
        else:
            window_left = window_right = w - 1
    if causal and cfg_causal is False:
        causal = False
    fields: dict[str, Any] = {
        "window_left": window_left,
        "window_right": window_right,
        "causal": causal,
        "scale": float(scaling) if scaling is not None else None,
        "name": "hf "
        + ("causal " if causal else "")
        + ("sliding window" if window_left != -1 else "dense"),
    }
    if softcap is not None and float(softcap) != 0.0:
        fields["softcap"] = float(softcap)
    return Pattern(**fields)


def spattn_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = _NOT_PASSED,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The attention function registered as ``"spattn"``; returns ``([B, Lq, Hq, Dv], None)``."""
    if dropout and module.training:
        raise NotImplementedError(
            f"dropout: attn_implementation='spattn' runs inference only, got dropout={dropout} "
            "in training mode (call model.eval())"
        )
    for name in ("position_bias", "head_mask"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"{name}: not supported by attn_implementation='spattn'")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask: attn_implementation='spattn' expects the 2-D padding mask that its "
            f"mask function returns, got shape {list(attention_mask.shape)} (a 4-D mask passed "
            "to the model is not supported)"
        )
    if sliding_window is _NOT_PASSED:
        sliding_window = layer_window(module)
    pattern = layer_pattern(module, sliding_window, is_causal, scaling, softcap)
    key_starts, key_lengths = padding_inputs(attention_mask, key.shape[2], query.shape[0])
    chunk = layer_chunk(module)
    if chunk is not None:
        pattern = pattern.replace(chunk_size=chunk, name=f"hf chunked attention ({chunk})")
        key_starts = chunk_key_starts(attention_mask, key.shape[2], chunk, key_starts, key_lengths)
    extra: dict[str, Any] = {}
    if key_starts is not None:
        extra["key_starts"] = key_starts
    if s_aux is not None:
        extra["sinks"] = s_aux.float()
    out = sparse_attention(query, key, value, pattern, key_lengths=key_lengths, **extra)
    return out.transpose(1, 2).contiguous(), None
