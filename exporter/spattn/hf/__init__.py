"""Hugging Face models through ``spattn::SparseAttention``.

``import spattn`` registers ``attn_implementation="spattn"`` with transformers (lazily: when
``transformers.modeling_utils`` / ``transformers.masking_utils`` are first imported, or at once if
they already are). Models whose attention goes through transformers' ``AttentionInterface``
(Mistral, Qwen2/3, Cohere2, Gemma 2/3, Phi-3, gpt-oss, ModernBERT...) then run the op with
``from_pretrained(..., attn_implementation="spattn")``; the others (GPT-Neo, BigBird, Longformer)
are converted by :func:`convert_hf`. :func:`export_hf` writes an ONNX model with Optimum's input
and output names (see docs/hf.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["register", "register_attention", "register_mask", "convert_hf", "export_hf"]

_done: set[str] = set()


def register_attention() -> None:
    """Register the attention function with ``transformers.AttentionInterface`` (idempotent)."""
    if "attention" in _done:
        return
    from transformers.modeling_utils import AttentionInterface

    from .attention import ATTN_IMPLEMENTATION, spattn_attention_forward

    AttentionInterface.register(ATTN_IMPLEMENTATION, spattn_attention_forward)
    _done.add("attention")


def register_mask() -> None:
    """Register the mask function with ``transformers.masking_utils.AttentionMaskInterface``.

    Without it transformers would pass ``attention_mask=None`` to a custom attention function and
    padding would be dropped.
    """
    if "mask" in _done:
        return
    from transformers.masking_utils import AttentionMaskInterface

    from .attention import ATTN_IMPLEMENTATION, spattn_mask

    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, spattn_mask)
    _done.add("mask")


def register() -> None:
    """Make ``attn_implementation="spattn"`` available in transformers (idempotent).

    Examples
    --------
    >>> import spattn.hf
    >>> spattn.hf.register()  # doctest: +SKIP
    """
    register_attention()
    register_mask()


def __getattr__(name: str) -> Any:
    if name == "convert_hf":
        from .convert import convert_hf

        return convert_hf
    if name == "export_hf":
        from .export import export_hf

        return export_hf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
