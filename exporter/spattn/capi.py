"""ctypes binding of the kernels' direct C API (kernels/include/spattn/c_api.h).

Runs the shared CPU kernel on numpy arrays, and the CUDA kernel on device tensors (anything with
``data_ptr()``, e.g. torch CUDA tensors), without ONNX Runtime. Used by tests and benchmarks.
Imports neither torch nor onnxruntime.

Example
-------
>>> import numpy as np
>>> from spattn import capi
>>> q = k = v = np.random.rand(1, 2, 128, 64).astype(np.float32)
>>> out = capi.cpu_forward(q, k, v, window_left=16, window_right=16)
>>> out.shape
(1, 2, 128, 64)
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import LIBRARY_FILES, library_path

_ATTRS = (
    "window_left",
    "window_right",
    "causal",
    "num_global",
    "stride",
    "block_size",
    "num_random",
    "seed",
)
_DEFAULTS = {
    "window_left": -1,
    "window_right": -1,
    "causal": 0,
    "num_global": 0,
    "stride": 0,
    "block_size": 64,
    "num_random": 0,
    "seed": 0,
}


_FIELDS: list[tuple[str, Any]] = (
    [(n, ctypes.c_void_p) for n in ("q", "k", "v", "o", "key_lengths", "block_indices")]
    + [("dtype", ctypes.c_int32)]
    + [
        (n, ctypes.c_int32)
        for n in (
            "batch",
            "heads_q",
            "heads_kv",
            "len_q",
            "len_k",
            "head_dim",
            "head_dim_v",
            "bi_heads",
            "bi_k",
        )
    ]
    + [("scale", ctypes.c_float)]
    + [(n, ctypes.c_int32) for n in _ATTRS]
    + [
        ("stream", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_size_t),
        ("num_threads", ctypes.c_int32),
    ]
)


class SpattnArgs(ctypes.Structure):
    """Mirror of ``spattn_args`` in c_api.h (same order, same types)."""

    _fields_ = _FIELDS


_LIB: ctypes.CDLL | None = None


def find_library() -> str:
    """Path of libspattn_kernels.so: ``$SPATTN_KERNELS_LIB`` when set, else a GPU build in the
    checkout's ``.gpu/`` folder, else :func:`spattn.runtime.library_path` ("kernels").

    Raises
    ------
    FileNotFoundError
        When ``$SPATTN_KERNELS_LIB`` names no file, or no library was built.
    """
    env = os.environ.get("SPATTN_KERNELS_LIB")
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"SPATTN_KERNELS_LIB: no such file: {env}")
        return env
    gpu_build = Path(__file__).resolve().parents[2] / ".gpu" / LIBRARY_FILES["kernels"]
    if gpu_build.is_file():
        return str(gpu_build)
    return library_path("kernels")


def load() -> ctypes.CDLL:
    """Load libspattn_kernels.so once (see :func:`find_library`) and declare the C signatures."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(find_library())
        for name in ("spattn_cpu_forward", "spattn_cuda_forward"):
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.POINTER(SpattnArgs), ctypes.c_char_p, ctypes.c_size_t]
            fn.restype = ctypes.c_int
        lib.spattn_cuda_workspace_size.argtypes = [ctypes.POINTER(SpattnArgs)]
        lib.spattn_cuda_workspace_size.restype = ctypes.c_size_t
        lib.spattn_has_cuda.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def has_cuda() -> bool:
    """True when the library was built with the CUDA kernels."""
    return bool(load().spattn_has_cuda())


_NP_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
_TORCH_DTYPES = {"torch.float32": 0, "torch.float16": 1, "torch.bfloat16": 2}


def _fill(
    args: SpattnArgs, q_shape, k_shape, v_shape, scale: float | None, attrs: dict, bi_shape=None
) -> None:
    unknown = set(attrs) - set(_ATTRS)
    if unknown:
        raise TypeError(f"unknown SparseAttention attributes: {sorted(unknown)}")
    args.batch, args.heads_q, args.len_q, args.head_dim = (int(x) for x in q_shape)
    _, args.heads_kv, args.len_k, _ = (int(x) for x in k_shape)
    args.head_dim_v = int(v_shape[3])
    args.scale = 0.0 if scale is None else float(scale)
    for name in _ATTRS:
        setattr(args, name, int(attrs.get(name, _DEFAULTS[name])))
    if bi_shape is not None:
        args.bi_heads, args.bi_k = int(bi_shape[0]), int(bi_shape[2])


def _call(fn, args: SpattnArgs) -> None:
    err = ctypes.create_string_buffer(1024)
    if fn(ctypes.byref(args), err, len(err)) != 0:
        raise ValueError(err.value.decode())


def cpu_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    key_lengths=None,
    block_indices=None,
    scale: float | None = None,
    num_threads: int = 0,
    **attrs: Any,
) -> np.ndarray:
    """SparseAttention on the CPU kernel; numpy float32/float16 arrays in, same dtype out.

    Attributes are the op's (docs/op-spec.md) as keyword arguments. Errors raise ValueError with
    the kernel's message.
    """
    q, k, v = (np.ascontiguousarray(x) for x in (q, k, v))
    if q.dtype not in _NP_DTYPES:
        raise ValueError(f"query: float32 or float16 numpy arrays, got {q.dtype}")
    out = np.empty(q.shape[:3] + v.shape[3:], dtype=q.dtype)
    args = SpattnArgs()
    kl = None if key_lengths is None else np.ascontiguousarray(key_lengths, dtype=np.int32)
    bi = None if block_indices is None else np.ascontiguousarray(block_indices, dtype=np.int32)
    _fill(args, q.shape, k.shape, v.shape, scale, attrs, None if bi is None else bi.shape)
    args.dtype = _NP_DTYPES[q.dtype] if k.dtype == q.dtype and v.dtype == q.dtype else -1
    args.q, args.k, args.v, args.o = q.ctypes.data, k.ctypes.data, v.ctypes.data, out.ctypes.data
    args.key_lengths = None if kl is None else kl.ctypes.data
    args.block_indices = None if bi is None else bi.ctypes.data
    args.num_threads = num_threads
    _call(load().spattn_cpu_forward, args)
    return out


def cuda_forward(
    q,
    k,
    v,
    out,
    *,
    key_lengths=None,
    block_indices=None,
    scale=None,
    stream=0,
    workspace=None,
    **attrs: Any,
) -> None:
    """SparseAttention on the CUDA kernel, in place into ``out`` (contiguous device tensors).

    ``workspace`` is a device tensor of at least :func:`cuda_workspace_size` bytes (or None when
    that is 0); ``stream`` the raw cudaStream_t (e.g. ``torch.cuda.current_stream().cuda_stream``).
    """
    args = _device_args(q, k, v, key_lengths, block_indices, scale, attrs)
    args.o = out.data_ptr()
    args.stream = stream
    if workspace is not None:
        args.workspace = workspace.data_ptr()
        args.workspace_bytes = workspace.numel() * workspace.element_size()
    _call(load().spattn_cuda_forward, args)


def cuda_workspace_size(
    q, k, v, *, key_lengths=None, block_indices=None, scale=None, **attrs: Any
) -> int:
    """Bytes of device workspace :func:`cuda_forward` needs for these shapes and attributes."""
    args = _device_args(q, k, v, key_lengths, block_indices, scale, attrs)
    return int(load().spattn_cuda_workspace_size(ctypes.byref(args)))


def _device_args(q, k, v, key_lengths, block_indices, scale, attrs) -> SpattnArgs:
    args = SpattnArgs()
    _fill(
        args,
        q.shape,
        k.shape,
        v.shape,
        scale,
        attrs,
        None if block_indices is None else tuple(block_indices.shape),
    )
    args.dtype = _TORCH_DTYPES.get(str(q.dtype), -1)
    args.q, args.k, args.v = q.data_ptr(), k.data_ptr(), v.data_ptr()
    args.key_lengths = None if key_lengths is None else key_lengths.data_ptr()
    args.block_indices = None if block_indices is None else block_indices.data_ptr()
    return args


class CudaRunner:
    """Runs the CUDA kernel through the direct entry on torch CUDA tensors, on torch's current
    stream, with a device workspace kept between calls (tests, benchmarks, profiling).

    ``attrs`` is a mapping of the op's attributes (``scale`` included; absent ones take the
    spec defaults), e.g. ``{"window_left": 64, "window_right": 64, "num_global": 8}``.
    """

    def __init__(self) -> None:
        self._ws: Any = None

    def prepare(
        self,
        q: Any,
        k: Any,
        v: Any,
        out: Any,
        attrs: Mapping[str, Any],
        key_lengths: Any = None,
        block_indices: Any = None,
    ) -> Callable[[], None]:
        """The argument struct and a large enough workspace, built once; returns a callable
        that launches (no host synchronization, allocation or planning: CUDA graph capturable).
        Errors of the call raise RuntimeError with the kernel's message."""
        import torch

        attrs = dict(attrs)
        scale = attrs.pop("scale", None)
        a = _device_args(q, k, v, key_lengths, block_indices, scale, attrs)
        a.o = out.data_ptr()
        a.stream = torch.cuda.current_stream().cuda_stream
        lib = load()
        need = int(lib.spattn_cuda_workspace_size(ctypes.byref(a)))
        if need and (self._ws is None or self._ws.numel() < need):
            self._ws = torch.empty(need, dtype=torch.uint8, device=q.device)
        if need:
            a.workspace = self._ws.data_ptr()
            a.workspace_bytes = self._ws.numel()
        err = ctypes.create_string_buffer(1024)
        # The callable holds the tensors whose pointers the struct carries.
        keep = (q, k, v, out, key_lengths, block_indices, self._ws)

        def call(a: SpattnArgs = a, keep: tuple = keep) -> None:
            if lib.spattn_cuda_forward(ctypes.byref(a), err, len(err)) != 0:
                raise RuntimeError(err.value.decode())

        return call

    def __call__(
        self,
        q: Any,
        k: Any,
        v: Any,
        attrs: Mapping[str, Any],
        key_lengths: Any = None,
        block_indices: Any = None,
        out: Any = None,
    ) -> Any:
        """Launch once; returns ``out`` (a new NaN-filled tensor when None, so that rows the
        kernel does not write show)."""
        import torch

        if out is None:
            shape = tuple(q.shape[:3]) + (v.shape[3],)
            out = torch.full(shape, float("nan"), dtype=q.dtype, device=q.device)
        self.prepare(q, k, v, out, attrs, key_lengths, block_indices)()
        return out
