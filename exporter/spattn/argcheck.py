"""Checks of the plain arguments of the public functions (numbers, flags, output paths).

Each raises ValueError (TypeError for a wrong kind of value) naming the argument and what it
expects, before any slow step runs.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

__all__ = ["tolerance_arg", "threads_arg", "int_arg", "bool_arg", "output_path"]


def tolerance_arg(where: str, name: str, value: Any) -> float | None:
    """None, or a finite real number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name}: expected a number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{where}: {name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def int_arg(where: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name}: expected an integer, got {value!r}")
    n = int(value)
    if n < low or (high is not None and n > high):
        bound = f">= {low}" if high is None else f"in {low} ... {high}"
        raise ValueError(f"{where}: {name}: expected an integer {bound}, got {value!r}")
    return n


def threads_arg(where: str, name: str, value: Any) -> int | None:
    """None (ONNX Runtime's default) or an integer >= 1."""
    return None if value is None else int_arg(where, name, value, 1)


def bool_arg(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name}: expected True or False, got {value!r}")
    return value


def output_path(where: str, name: str, path: Any) -> str:
    """A file path that can be created: its parent is an existing directory, it is not one.

    A missing parent is an error (not created silently: a typo in a directory name would
    otherwise scatter files).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: {name}: expected a file path, got {type(path).__name__}")
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise ValueError(f"{where}: {name}: expected a file path, got {str(path)!r}")
    if p.is_dir():
        raise ValueError(f"{where}: {name}: {str(path)!r} is a directory; expected a file path")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(
            f"{where}: {name}: {str(parent)!r} (the parent of {str(path)!r}) is a file, "
            "not a directory"
        )
    if not parent.exists():
        raise ValueError(
            f"{where}: {name}: the directory {str(parent)!r} does not exist; create it first"
        )
    return str(path)
