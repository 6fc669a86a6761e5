"""spattn: sparse attention exported as one fused ONNX node, ``spattn::SparseAttention``.

The torch-based parts (patterns, reference, layers, export) are imported lazily, so that
``spattn.runtime`` works with only onnxruntime and numpy installed.

Examples
--------
>>> import torch, spattn
>>> p = spattn.Pattern.longformer(attention_window=64, num_global=1)
>>> q = torch.randn(1, 2, 256, 32)
>>> spattn.sparse_attention(q, q, q, p).shape
torch.Size([1, 2, 256, 32])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Pattern": ("patterns", "Pattern"),
    "sparse_attention": ("functional", "sparse_attention"),
    "SparseMultiheadAttention": ("layers", "SparseMultiheadAttention"),
    "convert_transformer": ("layers", "convert_transformer"),
    "swap_attention": ("layers", "swap_attention"),
    "export": ("export", "export"),
    "ExportReport": ("export", "ExportReport"),
    "TOLERANCES": ("tolerances", "TOLERANCES"),
    "export_hf": ("hf.export", "export_hf"),
    "convert_hf": ("hf.convert", "convert_hf"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "export":
        # The submodule itself: it is callable (``spattn.export(model, inputs, path)``) and
        # importing ``spattn.export`` would replace a function of the same name anyway.
        value = importlib.import_module(".export", __name__)
        globals()[name] = value
        return value
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _register_hf() -> None:
    """``attn_implementation="spattn"`` in transformers, registered when transformers loads.

    Nothing is imported here: when transformers is installed, a post-import hook registers the
    attention function when ``transformers.modeling_utils`` is imported and the mask function when
    ``transformers.masking_utils`` is (at once for those already imported).
    """
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return
    from .hf._hook import when_imported

    when_imported("transformers.modeling_utils", "spattn.hf", "register_attention")
    when_imported("transformers.masking_utils", "spattn.hf", "register_mask")


_register_hf()
