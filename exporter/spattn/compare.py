"""The one output comparison of spattn: ``|got - ref| <= atol + rtol * |ref|`` per output.

Used by ``spattn verify``, by the validation of :func:`spattn.export` (and ``spattn export``) and
on the TensorRT path; tolerances come from :mod:`spattn.tolerances`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["compare_outputs"]


def compare_outputs(
    reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], atol: float, rtol: float
) -> list[dict[str, Any]]:
    """Per-output max abs/rel error and pass/fail (``|got - ref| <= atol + rtol * |ref|``).

    Each row: ``output``, ``max_abs``, ``max_rel`` (relative to ``|ref|``, tiny values clamped:
    large where the reference is near zero, which the rule tolerates through ``atol``),
    ``max_ratio`` (the largest ``|got - ref| / (atol + rtol * |ref|)``: the output passes when
    it is <= 1), ``passed`` and ``note``.

    Examples
    --------
    >>> rows = compare_outputs({"y": np.ones(3)}, {"y": np.ones(3)}, 1e-5, 1e-4)
    >>> rows[0]["passed"]
    True
    """
    from .tolerances import max_errors

    rows = []
    for name, ref in reference.items():
        row: dict[str, Any] = {
            "output": name,
            "max_abs": None,
            "max_rel": None,
            "max_ratio": None,
            "passed": False,
            "note": "",
        }
        if name not in got:
            row["note"] = "output missing"
        else:
            g = np.asarray(got[name], dtype=np.float64)
            r = np.asarray(ref, dtype=np.float64)
            if g.shape != r.shape:
                row["note"] = f"shape {list(g.shape)} != reference {list(r.shape)}"
            elif not np.all(np.isfinite(g)):
                row["note"] = "non-finite values"
                row["max_abs"], row["max_rel"] = float("nan"), float("nan")
            else:
                row["max_abs"], row["max_rel"] = max_errors(g, r)
                err, bound = np.abs(g - r), atol + rtol * np.abs(r)
                row["passed"] = bool(np.all(err <= bound))
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(err == 0, 0.0, err / bound)
                row["max_ratio"] = float(ratio.max(initial=0.0))
        rows.append(row)
    return rows
