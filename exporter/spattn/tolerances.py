"""Per-dtype comparison tolerances of docs/op-spec.md, kept in one place.

Every test and validation compares a backend against the float32 dense-mask reference with
``|got - ref| <= atol + rtol * |ref|`` elementwise. The table itself is the data file
``tolerances.json`` beside this module, read here and by the TensorRT plugin's C++ test harness
(its build generates a header from the file), so the two cannot disagree.

``python -m spattn.tolerances`` prints the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TOLERANCES", "TABLE_FILE", "tolerance", "max_errors", "assert_close", "dtype_name"]

#: The table's file: ``{"float32": {"atol": ..., "rtol": ...}, ...}``.
TABLE_FILE = Path(__file__).resolve().with_name("tolerances.json")


def _load(path: Path) -> dict[str, tuple[float, float]]:
    with open(path) as f:
        raw = json.load(f)
    return {name: (float(e["atol"]), float(e["rtol"])) for name, e in raw.items()}


_BY_NAME: dict[str, tuple[float, float]] = _load(TABLE_FILE)

#: ``{dtype: (atol, rtol)}`` keyed by torch dtypes (when torch is installed), numpy dtypes
#: (float32, float16) and the string names ``'float32'``, ``'float16'``, ``'bfloat16'``.
TOLERANCES: dict[Any, tuple[float, float]] = dict(_BY_NAME)
TOLERANCES[np.dtype(np.float32)] = _BY_NAME["float32"]
TOLERANCES[np.dtype(np.float16)] = _BY_NAME["float16"]
TOLERANCES[np.float32] = _BY_NAME["float32"]
TOLERANCES[np.float16] = _BY_NAME["float16"]
try:  # torch is optional for runtime-only users
    import torch

    TOLERANCES[torch.float32] = _BY_NAME["float32"]
    TOLERANCES[torch.float16] = _BY_NAME["float16"]
    TOLERANCES[torch.bfloat16] = _BY_NAME["bfloat16"]
except ImportError:  # pragma: no cover
    pass


def dtype_name(dtype: Any) -> str:
    """Canonical name ('float32', 'float16' or 'bfloat16') of a torch/numpy dtype or a name.

    Examples
    --------
    >>> dtype_name("float16")
    'float16'
    """
    if isinstance(dtype, str):
        name = dtype
    else:
        name = str(dtype).replace("torch.", "")
        if name not in _BY_NAME:
            try:
                name = np.dtype(dtype).name
            except TypeError:
                pass
    name = {"float": "float32", "half": "float16", "bf16": "bfloat16"}.get(name, name)
    if name not in _BY_NAME:
        raise KeyError(f"no tolerance for dtype {dtype!r}; known: {sorted(_BY_NAME)}")
    return name


def tolerance(dtype: Any) -> tuple[float, float]:
    """``(atol, rtol)`` for a dtype (torch, numpy or name).

    Examples
    --------
    >>> tolerance("bfloat16")
    (0.015, 0.02)
    """
    return _BY_NAME[dtype_name(dtype)]


def _to_numpy64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, bfloat16 included
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float64)


def max_errors(got: Any, ref: Any) -> tuple[float, float]:
    """Largest absolute and relative (to ``|ref|``, tiny values clamped) error.

    Examples
    --------
    >>> max_errors(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    (0.5, 0.2)
    """
    g, r = _to_numpy64(got), _to_numpy64(ref)
    if g.shape != r.shape:
        raise ValueError(f"shape mismatch: got {g.shape}, reference {r.shape}")
    if g.size == 0:
        return 0.0, 0.0
    diff = np.abs(g - r)
    rel = diff / np.maximum(np.abs(r), 1e-6)
    return float(diff.max()), float(rel.max())


def assert_close(got: Any, ref: Any, dtype: Any, msg: str = "") -> None:
    """Assert ``|got - ref| <= atol + rtol * |ref|`` elementwise with the dtype's tolerances.

    Examples
    --------
    >>> assert_close(np.ones(3), np.ones(3) + 1e-6, "float32")
    """
    atol, rtol = tolerance(dtype)
    g, r = _to_numpy64(got), _to_numpy64(ref)
    if g.shape != r.shape:
        raise AssertionError(f"{msg} shape mismatch: got {g.shape}, reference {r.shape}")
    if not np.all(np.isfinite(g)):
        raise AssertionError(f"{msg} output has non-finite values")
    bad = np.abs(g - r) > atol + rtol * np.abs(r)
    if bad.any():
        idx = tuple(int(t[0]) for t in np.nonzero(bad))
        ma, mr = max_errors(g, r)
        raise AssertionError(
            f"{msg} {int(bad.sum())}/{bad.size} elements outside atol={atol}, rtol={rtol} "
            f"({dtype_name(dtype)}); first at {idx}: got {g[idx]}, ref {r[idx]}; "
            f"max abs {ma:.3g}, max rel {mr:.3g}"
        )


if __name__ == "__main__":  # pragma: no cover - a convenience print of the table
    for _name, (_atol, _rtol) in _BY_NAME.items():
        print(f"{_name} atol={_atol:g} rtol={_rtol:g}")
