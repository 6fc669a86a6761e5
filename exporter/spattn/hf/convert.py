"""``convert_hf``: put ``spattn::SparseAttention`` into a Hugging Face model, in place.

Models whose attention goes through transformers' ``AttentionInterface`` switch to
``attn_implementation="spattn"``. The others get their attention modules' ``forward`` replaced by
one that reproduces Hugging Face's eval semantics exactly:

- GPT-Neo: causal, ``local`` layers keep ``window_size`` keys (``window_left = window_size - 1``);
  scores are **not** scaled (``scale = 1``).
- BigBird ``block_sparse`` (eval): query blocks 0 and ``nb - 1`` attend to every key; every other
  query block ``qb`` attends to key blocks ``qb - 1 .. qb + 1``, ``0`` and ``nb - 1``, plus its
  ``num_random_blocks`` "random" blocks, which in eval mode are all block 0: block 0 is counted
  ``1 + r`` times in the softmax. That multiplicity is reproduced exactly by ``r`` copies of block
  0's keys/values placed before the keys, listed by a ``block_indices`` layout. ``original_full``
  (what HF falls back to for short inputs) is dense non-causal attention.
- Longformer: see :mod:`.longformer`.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from typing import Any

import torch
from torch import nn

from ..functional import _is_tracing, sparse_attention
from ..patterns import Pattern
from .attention import ATTN_IMPLEMENTATION, padding_inputs

__all__ = ["convert_hf", "attention_classes", "bigbird_layout"]


def attention_classes(model: nn.Module) -> list[str]:
    """Names of the modules that look like attention (class name contains ``Attention``)."""
    names = sorted({type(m).__name__ for m in model.modules() if "Attention" in type(m).__name__})
    return names


def _set_config_impl(model: nn.Module) -> None:
    """Switch the model's mask creation to spattn's, on a copy of its config: the config object
    may be shared with another model (``from_config`` keeps it), which must stay as it was."""
    import copy

    copies: dict[int, Any] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or not hasattr(cfg, "_attn_implementation_internal"):
            continue
        if id(cfg) not in copies:
            copies[id(cfg)] = copy.deepcopy(cfg)
            copies[id(cfg)]._attn_implementation = ATTN_IMPLEMENTATION
        m.config = copies[id(cfg)]


# ---------------------------------------------------------------------------------- GPT-Neo
def _gpt_neo_forward(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    layer_past: Any = None,
    use_cache: bool = False,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if output_attentions:
        raise NotImplementedError("output_attentions: spattn never materialises attention weights")
    q = self._split_heads(self.q_proj(hidden_states), self.num_heads, self.head_dim)
    k = self._split_heads(self.k_proj(hidden_states), self.num_heads, self.head_dim)
    v = self._split_heads(self.v_proj(hidden_states), self.num_heads, self.head_dim)
    if layer_past is not None:
        k, v = layer_past.update(k, v, self.layer_id)
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask: the spattn GPT-Neo attention expects the 2-D padding mask, got shape "
            f"{list(attention_mask.shape)}"
        )
    window = int(self.config.window_size) if self.attention_type == "local" else 0
    pattern = Pattern(window_left=window - 1 if window else -1, causal=True, scale=1.0)
    key_starts, key_lengths = padding_inputs(attention_mask, k.shape[2], q.shape[0])
    extra: dict[str, Any] = {"key_starts": key_starts} if key_starts is not None else {}
    out = sparse_attention(q, k, v, pattern, key_lengths=key_lengths, **extra)
    out = self.out_proj(self._merge_heads(out, self.num_heads, self.head_dim))
    return self.resid_dropout(out), None


# ---------------------------------------------------------------------------------- BigBird
def bigbird_layout(
    num_blocks: Any, num_random: int, device: Any = None
) -> torch.Tensor:  # [1, nb, K] int32
    """HF BigBird's eval block layout over keys ``[r copies of block 0, blocks 0 .. nb-1]``.

    Key block ``c < r`` is copy ``c`` of block 0; key block ``r + b`` is block ``b``. Rows 0 and
    ``nb - 1`` list every original block; the others ``0, qb-1, qb, qb+1, nb-1`` and the ``r``
    copies (duplicates such as ``0`` and ``qb - 1`` for ``qb = 1`` count once, as in HF).
    Built from tensor ops, so it follows a dynamic ``num_blocks`` in an exported graph.
    """
    nb = num_blocks
    r = int(num_random)
    qb = torch.arange(nb, device=device).unsqueeze(1)  # [nb, 1]
    all_blocks = (torch.arange(nb, device=device) + r).unsqueeze(0).expand(nb, -1)  # [nb, nb]
    band = torch.cat(
        [
            torch.zeros_like(qb),
            qb - 1,
            qb,
            qb + 1,
            torch.full_like(qb, 0) + (nb - 1),
        ],
        dim=1,
    )
    band = band + r
    copies = torch.arange(r, device=device).unsqueeze(0).expand(nb, -1)
    sparse_row = torch.cat([band, copies], dim=1)  # [nb, 5 + r]
    # pad both to K = nb + 5 + r columns with -1
    pad_sparse = torch.full_like(all_blocks, -1)
    pad_all = torch.full_like(sparse_row, -1)
    sparse_full = torch.cat([sparse_row, pad_sparse], dim=1)
    global_full = torch.cat([all_blocks, pad_all], dim=1)
    is_global = (qb == 0) | (qb == nb - 1)
    layout = torch.where(is_global, global_full, sparse_full)
    return layout.to(torch.int32).unsqueeze(0)


def _bigbird_sparse(
    self: Any,
    hidden_states: torch.Tensor,
    band_mask: Any = None,
    from_mask: torch.Tensor | None = None,
    to_mask: torch.Tensor | None = None,
    from_blocked_mask: Any = None,
    to_blocked_mask: Any = None,
) -> tuple[torch.Tensor, None]:
    b, seqlen, _ = hidden_states.shape
    bs = int(self.block_size)
    r = int(self.num_random_blocks)
    if not _is_tracing() and seqlen % bs:
        raise ValueError(
            f"hidden_states: BigBird block-sparse needs a length multiple of block_size {bs}, "
            f"got {seqlen}"
        )
    h, d = self.num_attention_heads, self.attention_head_size

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, -1, h, d).transpose(1, 2)

    q = heads(self.query(hidden_states))
    k = heads(self.key(hidden_states))
    v = heads(self.value(hidden_states))
    if r > 0:
        k = torch.cat([k[:, :, :bs].repeat(1, 1, r, 1), k], dim=2)
        v = torch.cat([v[:, :, :bs].repeat(1, 1, r, 1), v], dim=2)
    nb = seqlen // bs
    layout = bigbird_layout(nb, r, q.device)
    key_lengths = key_starts = None
    if to_mask is not None:
        valid = to_mask.reshape(b, seqlen) > 0
        if r > 0:
            valid = torch.cat([valid[:, :bs].repeat(1, r), valid], dim=1)
        key_starts, key_lengths = padding_inputs(valid, valid.shape[1], b)
        if _is_tracing() and key_lengths is not None:
            # An exported graph holds this branch only; HF runs dense attention at or below
            # (5 + 2r) * block_size tokens. Such a length makes key_lengths -1, which the op
            # rejects at run time, rather than giving a result HF would not.
            short = torch.full_like(key_lengths, seqlen) <= (5 + 2 * r) * bs
            key_lengths = torch.where(short, torch.full_like(key_lengths, -1), key_lengths)
    pattern = Pattern(block_size=bs, block_indices=None, scale=float(d) ** -0.5)
    extra: dict[str, Any] = {"key_starts": key_starts} if key_starts is not None else {}
    out = sparse_attention(
        q, k, v, pattern, key_lengths=key_lengths, block_indices=layout, **extra
    )  # [B, H, L, D]
    if from_mask is not None:
        out = out * from_mask.to(out.dtype)
    return out.transpose(1, 2).reshape(b, seqlen, h * d), None


def _bigbird_full(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if encoder_hidden_states is not None or kwargs.get("cache") is not None:
        raise NotImplementedError(
            "BigBird as a decoder (cross attention, cache) is not supported by spattn"
        )
    if getattr(self, "is_decoder", False):
        raise NotImplementedError("BigBird with is_decoder=True is not supported by spattn")
    b, seqlen, _ = hidden_states.shape
    h, d = self.num_attention_heads, self.attention_head_size

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, -1, h, d).transpose(1, 2)

    q, k, v = (
        heads(self.query(hidden_states)),
        heads(self.key(hidden_states)),
        heads(self.value(hidden_states)),
    )
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask: expected the 2-D padding mask, got shape {list(attention_mask.shape)}"
        )
    key_starts, key_lengths = padding_inputs(attention_mask, k.shape[2], b)
    extra: dict[str, Any] = {"key_starts": key_starts} if key_starts is not None else {}
    out = sparse_attention(q, k, v, Pattern(), key_lengths=key_lengths, **extra)
    return out.transpose(1, 2).reshape(b, seqlen, h * d), None


class SpattnBigBirdSelfAttention(nn.Module):
    """Stands in for both of BigBird's attention classes (``original_full`` / ``block_sparse``).

    The parent ``BigBirdAttention`` dispatches on its ``attention_type``, which HF switches to
    ``original_full`` for short inputs; this module keeps the projections and follows it.
    """

    def __init__(self, old: nn.Module, config: Any, parent: nn.Module) -> None:
        super().__init__()
        self.query, self.key, self.value = old.query, old.key, old.value
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.block_size = config.block_size
        self.num_random_blocks = config.num_random_blocks
        self.is_decoder = config.is_decoder
        self._parent_type = lambda: parent.attention_type

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self._parent_type() == "block_sparse":
            kwargs.pop("output_attentions", None)
            return _bigbird_sparse(self, hidden_states, *args)
        return _bigbird_full(self, hidden_states, **kwargs)


def _bigbird_set_attention_type(self: Any, value: str, layer_idx: Any = None) -> None:
    if value not in ("original_full", "block_sparse"):
        raise ValueError(
            f"attention_type: expected 'original_full' or 'block_sparse', got {value!r}"
        )
    self.attention_type = value


def _convert_bigbird(model: nn.Module) -> int:
    from transformers.models.big_bird.modeling_big_bird import BigBirdAttention

    n = 0
    for m in model.modules():
        if isinstance(m, BigBirdAttention) and not isinstance(m.self, SpattnBigBirdSelfAttention):
            m.self = SpattnBigBirdSelfAttention(m.self, m.config, m)
            m.set_attention_type = types.MethodType(_bigbird_set_attention_type, m)  # type: ignore[method-assign]
            n += 1
    return n


# ------------------------------------------------------- complex rotary (DeepSeek-V2, Llama 4)
# These families' rotary embeddings return complex frequencies (torch.polar) and their
# apply_rotary_emb multiplies complex views of q and k; ONNX has no complex type, so torch.onnx
# cannot translate it. The converted model's rotary modules return the same numbers as real
# (cos, sin) pairs, and the modeling module's apply_rotary_emb, for such pairs, multiplies
# out the real and imaginary parts: (a + ib)(c + is) = (ac - bs) + i(as + bc), in float32 as
# the original's complex64 (equal to it within rounding; tests/hf checks the logits). Complex
# frequencies still take the original function, so an unconverted model (the eager reference)
# runs unchanged.
def _rotate_pairs(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x [..., d] as d/2 (real, imaginary) pairs times f [..., d/2, 2] (cos, sin), in float32."""
    xp = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xp[..., 0], xp[..., 1]
    c, s = f[..., 0], f[..., 1]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


def _real_rotary_forward(self: Any, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """The rotary module's forward with its complex result as real (cos, sin) pairs."""
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    scaling = float(self.attention_scaling)
    return torch.stack((torch.cos(freqs) * scaling, torch.sin(freqs) * scaling), dim=-1)


def _real_apply_rotary_emb(original: Any, heads_axis: int) -> Any:
    """A family's apply_rotary_emb, taking real (cos, sin) pairs too."""

    @functools.wraps(original)
    def apply_rotary_emb(
        xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if freqs_cis.is_complex():
            return original(xq, xk, freqs_cis)
        # the pairs' last axis comes after d/2, so the heads axis goes where the original's does
        f = freqs_cis.unsqueeze(heads_axis).to(xq.device)
        return _rotate_pairs(xq, f).type_as(xq), _rotate_pairs(xk, f).type_as(xk)

    apply_rotary_emb._spattn_real_pairs = True  # type: ignore[attr-defined]
    return apply_rotary_emb


# (modeling module under transformers.models, rotary class, axis where apply_rotary_emb inserts
# the heads into freqs_cis [B, L, d/2]): q and k are [B, H, L, d] in DeepSeek-V2's call and
# [B, L, H, d] in Llama 4's (it rotates before the transpose)
_COMPLEX_ROTARY: tuple[tuple[str, str, int], ...] = (
    ("deepseek_v2.modeling_deepseek_v2", "DeepseekV2RotaryEmbedding", 1),
    ("llama4.modeling_llama4", "Llama4TextRotaryEmbedding", 2),
)


def _real_rotary(model: nn.Module) -> int:
    """Switch the complex rotary modules of ``_COMPLEX_ROTARY`` to real pairs; returns how many
    were switched."""
    from transformers.modeling_rope_utils import dynamic_rope_update

    # dynamic_rope_update: the same update of inv_freq for the dynamic RoPE types as the original
    forward = dynamic_rope_update(_real_rotary_forward)
    n = 0
    for module, cls_name, heads_axis in _COMPLEX_ROTARY:
        # a model holding the family's classes has loaded its module; importing each family's
        # here would load them all for every model
        mod: Any = sys.modules.get(f"transformers.models.{module}")
        if mod is None:
            continue
        rotary = [m for m in model.modules() if isinstance(m, getattr(mod, cls_name))]
        if not rotary:
            continue
        if not getattr(mod.apply_rotary_emb, "_spattn_real_pairs", False):
            mod.apply_rotary_emb = _real_apply_rotary_emb(mod.apply_rotary_emb, heads_axis)
        for m in rotary:
            m.forward = types.MethodType(forward, m)  # type: ignore[method-assign]
        n += len(rotary)
    return n


# ------------------------------------------------------------------ KV-shared layers (Gemma 4)
def _keep_2d_masks_when_slicing(model: nn.Module) -> int:
    """Gemma 4's text model slices its inputs to the kept logits' positions before its
    KV-shared layers (``_maybe_slice_kv_shared_inputs``), masks included as ``m[:, :, keep, :]``:
    4-D indexing, where spattn's masks are the 2-D padding mask ``[B, keys]``, which no query
    slicing changes (the op aligns the kept queries with the last keys). Around the original,
    each 2-D mask is viewed as ``[B, 1, 1, keys]`` (one query row, which the slice keeps) and
    turned back after, so the slicing, and its savings in ``generate``, stay as they are."""
    n = 0
    for m in model.modules():
        original = getattr(m, "_maybe_slice_kv_shared_inputs", None)
        if original is None or getattr(original, "_spattn_2d_masks", False):
            continue

        def slicing(
            hidden_states: Any,
            per_layer_inputs: Any,
            position_embeddings: Any,
            causal_mask_mapping: dict[str, Any],
            *args: Any,
            _original: Any = original,
            **kwargs: Any,
        ) -> Any:
            flat = {  # the 2-D masks, each as one query row
                k: v is not None and v.dim() == 2 for k, v in causal_mask_mapping.items()
            }
            as_4d = {
                k: v[:, None, None, :] if flat[k] else v for k, v in causal_mask_mapping.items()
            }
            hidden, per_layer, positions, sliced = _original(
                hidden_states, per_layer_inputs, position_embeddings, as_4d, *args, **kwargs
            )
            back = {k: v[:, 0, 0, :] if flat[k] else v for k, v in sliced.items()}
            return hidden, per_layer, positions, back

        slicing._spattn_2d_masks = True  # type: ignore[attr-defined]
        setattr(m, "_maybe_slice_kv_shared_inputs", slicing)  # noqa: B010 - an instance attribute
        n += 1
    return n


# ---------------------------------------------------------------------------------- dispatch
def _convert_gpt_neo(model: nn.Module) -> int:
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    n = 0
    for m in model.modules():
        if isinstance(m, GPTNeoSelfAttention):
            m.forward = types.MethodType(_gpt_neo_forward, m)  # type: ignore[method-assign]
            m.config = getattr(m, "config", None) or model.config
            n += 1
    return n


def convert_hf(model: nn.Module) -> nn.Module:
    """Make every attention of a Hugging Face model run ``spattn::SparseAttention`` (in place).

    Raises
    ------
    ValueError
        When no attention could be converted, naming the attention classes found.

    Examples
    --------
    >>> from transformers import AutoConfig, AutoModel  # doctest: +SKIP
    >>> model = convert_hf(AutoModel.from_config(AutoConfig.for_model("mistral")))  # doctest: +SKIP
    """
    from . import register

    register()
    mt = getattr(getattr(model, "config", None), "model_type", None)
    converted = 0
    if mt == "gpt_neo":
        converted = _convert_gpt_neo(model)
    elif mt == "big_bird":
        converted = _convert_bigbird(model)
    elif mt == "longformer":
        from .longformer import convert_longformer

        converted = convert_longformer(model)
    elif getattr(model, "_supports_attention_backend", False):
        hf_model: Any = model
        hf_model.set_attn_implementation(ATTN_IMPLEMENTATION)
        if hf_model.config._attn_implementation == ATTN_IMPLEMENTATION:
            converted = sum(1 for m in model.modules() if _calls_interface(m))
    elif mt in _UNFLAGGED_INTERFACE_FAMILIES:
        # set_attn_implementation refuses these classes, though their attention calls
        # AttentionInterface and their masks come from masking_utils: the config is switched
        # directly, as for GPT-Neo's masks below
        _set_config_impl(model)
        converted = sum(1 for m in model.modules() if _calls_interface(m))
    if converted == 0:
        raise ValueError(
            f"convert_hf: no attention of this {type(model).__name__} (model_type {mt!r}) could "
            f"be converted to spattn; attention classes found: {attention_classes(model) or 'none'}"
            + _why_not_converted(model)
        )
    _real_rotary(model)
    _keep_2d_masks_when_slicing(model)
    if mt in ("gpt_neo", "big_bird"):
        # their masks come from masking_utils: spattn's mask function keeps them 2-D. Longformer
        # slices the eager mask back to 2-D itself and keeps the eager one.
        _set_config_impl(model)
    model._spattn_converted = converted  # type: ignore[assignment]
    return model


# Families whose attention calls AttentionInterface but whose model class transformers does not
# flag with _supports_attention_backend, run through spattn all the same: each is in the test
# matrix (tests/hf: PyTorch parity with padding, export). Qwen3-Next's linear-attention layers
# keep a state between decoding steps that the exported cache would not carry; its config names
# them in layer_types, so a -with-past export is refused by name (export_hf) and it exports
# without a cache (task text-generation). Jamba is not here: its config does not name its
# state-space layers in layer_types, so nothing would stop a cache export that drops their state.
_UNFLAGGED_INTERFACE_FAMILIES = frozenset({"stablelm", "qwen3_next"})


def _why_not_converted(model: nn.Module) -> str:
    """The reason a model has no attention call to route to spattn, for convert_hf's error."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    why = ""
    if not getattr(model, "_supports_attention_backend", False):
        calls = any(
            type(m).__name__.endswith("Attention") and _forward_reads_interface(type(m).forward)
            for m in model.modules()
        )
        why = (
            " (its attention modules call transformers' AttentionInterface, but its model class "
            "does not accept a registered attention implementation: transformers sets no "
            "_supports_attention_backend for it"
            if calls
            else " (its attention modules compute attention in their own code instead of calling "
            "transformers' AttentionInterface, so there is no call to route to the op"
        )
        # ALiBi adds a per-head linear position bias to the scores: not a pattern the op has
        if mt in ("bloom", "mpt") or getattr(cfg, "alibi", False):
            why += (
                "; they also add ALiBi position biases to the scores, which the op does not express"
            )
        why += ")"
    return why + "; in PyTorch, attn_implementation='eager' or 'sdpa' runs it"


def _calls_interface(m: nn.Module) -> bool:
    """An attention module of an AttentionInterface model: it has a config and a layer index
    (decoders), or its forward looks its attention function up in ALL_ATTENTION_FUNCTIONS
    (encoders such as DistilBERT keep no layer index)."""
    name = type(m).__name__
    if not (name.endswith("Attention") and hasattr(m, "config")):
        return False
    forward: Any = type(m).forward
    return hasattr(m, "layer_idx") or _forward_reads_interface(forward)


@functools.cache
def _forward_reads_interface(forward: Any) -> bool:
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(forward)
    except (OSError, TypeError):  # no source (a compiled or generated class)
        return False
