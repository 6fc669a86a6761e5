"""What the GPU backends accept, read from the kernels library itself.

The CUDA kernels (used by the ONNX Runtime CUDA execution provider and by the TensorRT plugin)
accept the head dims that ``spattn::cuda::head_dim_support()`` lists: the one place that fact
lives. It is read here by asking the library to validate an impossible head dim and parsing the
expectation its error states, so a kernel that gains head dims needs no change on this side.

Examples
--------
>>> from spattn import support
>>> support.cuda_head_dims()  # doctest: +SKIP
HeadDims(dims=(64, 128), max_dim=128, backend='CUDA')
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["HeadDims", "cuda_head_dims", "gpu_warnings"]


@dataclass(frozen=True)
class HeadDims:
    """Head dims a backend accepts: exactly ``dims`` when given, else ``1 ... max_dim``."""

    dims: tuple[int, ...] | None
    max_dim: int
    backend: str

    def accepts(self, d: int) -> bool:
        """Whether head dim ``d`` runs on this backend."""
        return d in self.dims if self.dims is not None else 1 <= d <= self.max_dim

    def text(self) -> str:
        """``64, 128`` or ``1 ... 256``."""
        if self.dims is not None:
            return ", ".join(map(str, self.dims))
        return f"1 ... {self.max_dim}"


_EXPECT = re.compile(r"head dim D in \{([^}]*)\} on (\w+)")


def parse_expectation(message: str) -> HeadDims | None:
    """The accepted head dims stated by a kernel validation error, or None.

    Examples
    --------
    >>> parse_expectation("SparseAttention: query: head dim D in {64, 128} on CUDA, got D = 9")
    HeadDims(dims=(64, 128), max_dim=128, backend='CUDA')
    >>> parse_expectation("SparseAttention: query: head dim D in {1 .. 512} on CPU, got D = 0")
    HeadDims(dims=None, max_dim=512, backend='CPU')
    """
    m = _EXPECT.search(message)
    if m is None:
        return None
    body, backend = m.group(1).strip(), m.group(2)
    if ".." in body:
        return HeadDims(None, int(body.split("..")[1]), backend)
    dims = tuple(int(x) for x in body.split(",") if x.strip())
    return HeadDims(dims, max(dims), backend) if dims else None


@functools.cache
def cuda_head_dims() -> HeadDims | None:
    """Head dims of the CUDA kernels (ONNX Runtime CUDA EP, TensorRT plugin); None when the
    library is not found or was built without CUDA."""
    try:
        from . import capi

        lib = capi.load()
        if not lib.spattn_has_cuda():
            return None
        args = capi.SpattnArgs()
        args.batch = args.heads_q = args.heads_kv = args.len_q = args.len_k = 1
        args.head_dim = args.head_dim_v = 1 << 20  # no backend takes it: validation says why
        args.window_left = args.window_right = -1
        args.block_size = 64
        err = ctypes.create_string_buffer(1024)
        if lib.spattn_cuda_forward(ctypes.byref(args), err, len(err)) == 0:
            return None
        return parse_expectation(err.value.decode(errors="replace"))
    except (OSError, FileNotFoundError, AttributeError, ImportError):
        return None


def gpu_warnings(nodes: list[dict[str, Any]]) -> list[str]:
    """One warning per spattn node (from :func:`spattn.nodes.spattn_node_info`) whose head dims
    the CUDA execution provider and the TensorRT plugin do not take."""
    support = cuda_head_dims()
    if support is None:
        return []
    out = []
    for n in nodes:
        dims = [d for d in (n.get("head_dim"), n.get("head_dim_v")) if isinstance(d, int)]
        bad = sorted({d for d in dims if not support.accepts(d)})
        if bad:
            out.append(
                f"node {n['name']!r}: head dim {', '.join(map(str, bad))} cannot run on the "
                f"CUDA execution provider or TensorRT (they take {support.text()}); it runs on "
                "ONNX Runtime's CPU provider only: choose a head dim they take (d_model / heads)"
            )
    return out
