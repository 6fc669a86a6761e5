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
