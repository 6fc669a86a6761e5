"""What the GPU backends accept: warnings for exported nodes they cannot run.

The head dims each backend takes live in one table, ``spattn.attributes.HEAD_DIMS`` (checked
against the C++ list ``SPATTN_CUDA_HEAD_DIMS`` in kernels/include/spattn/params.h by
tests/kernels/test_attributes.py).

Examples
--------
>>> from spattn import support
>>> support.gpu_warnings([{"name": "attn", "head_dim": 16, "head_dim_v": 16}])[0][:32]
"node 'attn': head dim 16 cannot "
"""

from __future__ import annotations

from typing import Any

from .attributes import HEAD_DIMS

__all__ = ["gpu_warnings"]


def gpu_warnings(nodes: list[dict[str, Any]]) -> list[str]:
    """One warning per spattn node (from :func:`spattn.nodes.spattn_node_info`) whose head dims
    the CUDA execution provider or the TensorRT plugin do not take."""
    out = []
    for n in nodes:
        d, dv = n.get("head_dim"), n.get("head_dim_v", n.get("head_dim"))
        if not isinstance(d, int) or not isinstance(dv, int):
            continue  # dynamic head dims: checked by the backend when the model runs
        refused = [k for k in ("cuda", "tensorrt") if not HEAD_DIMS[k].supports(d, dv)]
        if refused:
            what = " or ".join(
                {"cuda": "the CUDA execution provider", "tensorrt": "TensorRT"}[k] for k in refused
            )
            dims = "head dim " + (str(d) if d == dv else f"{d} / {dv} (D / Dv)")
            out.append(
                f"node {n['name']!r}: {dims} cannot run on {what} (they take "
                f"{HEAD_DIMS['cuda'].describe()}); it runs on ONNX Runtime's CPU provider only: "
                "choose a head dim they take (d_model / heads)"
            )
    return out
