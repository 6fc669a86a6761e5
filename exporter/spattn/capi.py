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

from .attributes import attribute
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
_DEFAULTS = {name: attribute(name).default for name in _ATTRS}


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
    # Appended in the struct's second version (read by the ``_ex`` entries, which take the
    # caller's struct size; zero leaves each off).
    + [(n, ctypes.c_void_p) for n in ("global_mask", "key_starts", "sinks")]
    + [("softcap", ctypes.c_float)]
    # The third version starts past the second's tail padding (never read: a caller built
    # against the second passes it uninitialized).
    + [("reserved_v2_padding", ctypes.c_int32), ("chunk_size", ctypes.c_int32)]
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
        if hasattr(lib, "spattn_cpu_forward_ex"):  # a library that reads the whole struct
            for name in ("spattn_cpu_forward_ex", "spattn_cuda_forward_ex"):
                fn = getattr(lib, name)
                fn.argtypes = [
                    ctypes.POINTER(SpattnArgs),
                    ctypes.c_size_t,
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                ]
                fn.restype = ctypes.c_int
            lib.spattn_cuda_workspace_size_ex.argtypes = [
                ctypes.POINTER(SpattnArgs),
                ctypes.c_size_t,
            ]
            lib.spattn_cuda_workspace_size_ex.restype = ctypes.c_size_t
        _LIB = lib
    return _LIB


def _uses_v2(args: SpattnArgs) -> bool:
    return bool(
        args.global_mask or args.key_starts or args.sinks or args.softcap or args.chunk_size
    )


def _forward(lib: ctypes.CDLL, device: str, args: SpattnArgs, err: Any) -> int:
    """One call of ``spattn_<device>_forward[_ex]``: the ``_ex`` entry with this struct's size
    when the library has it; an older library only when no field of the second version is set."""
    ex = getattr(lib, f"spattn_{device}_forward_ex", None)
    if ex is not None:
        return int(ex(ctypes.byref(args), ctypes.sizeof(SpattnArgs), err, len(err)))
    if _uses_v2(args):
        raise ValueError(
            f"{find_library()} predates global_mask, key_starts, sinks, softcap and chunk_size "
            "(no spattn_*_forward_ex entry): rebuild it"
        )
    return int(getattr(lib, f"spattn_{device}_forward")(ctypes.byref(args), err, len(err)))


def _workspace_size(lib: ctypes.CDLL, args: SpattnArgs) -> int:
    ex = getattr(lib, "spattn_cuda_workspace_size_ex", None)
    if ex is not None:
        return int(ex(ctypes.byref(args), ctypes.sizeof(SpattnArgs)))
    return int(lib.spattn_cuda_workspace_size(ctypes.byref(args)))


def has_cuda() -> bool:
    """True when the library was built with the CUDA kernels."""
    return bool(load().spattn_has_cuda())


_NP_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
_TORCH_DTYPES = {"torch.float32": 0, "torch.float16": 1, "torch.bfloat16": 2}


def _fill(
    args: SpattnArgs, q_shape, k_shape, v_shape, scale: float | None, attrs: dict, bi_shape=None
) -> None:
    unknown = set(attrs) - set(_ATTRS) - {"softcap", "chunk_size"}
    if unknown:
        raise TypeError(f"unknown SparseAttention attributes: {sorted(unknown)}")
    args.softcap = float(attrs.get("softcap", 0.0) or 0.0)
    args.chunk_size = int(attrs.get("chunk_size", 0) or 0)
    args.batch, args.heads_q, args.len_q, args.head_dim = (int(x) for x in q_shape)
    _, args.heads_kv, args.len_k, _ = (int(x) for x in k_shape)
    args.head_dim_v = int(v_shape[3])
    args.scale = 0.0 if scale is None else float(scale)
    for name in _ATTRS:
        setattr(args, name, int(attrs.get(name, _DEFAULTS[name])))
    if bi_shape is not None:
        args.bi_heads, args.bi_k = int(bi_shape[0]), int(bi_shape[2])


def _call(device: str, args: SpattnArgs) -> None:
    err = ctypes.create_string_buffer(1024)
    if _forward(load(), device, args, err) != 0:
        raise ValueError(err.value.decode())


def cpu_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    key_lengths=None,
    block_indices=None,
    global_mask=None,
    key_starts=None,
    sinks=None,
    scale: float | None = None,
    num_threads: int = 0,
    **attrs: Any,
) -> np.ndarray:
    """SparseAttention on the CPU kernel; numpy float32/float16 arrays in, same dtype out.

    Attributes are the op's (docs/op-spec.md, ``softcap`` included) as keyword arguments; the
    optional inputs are numpy arrays (integer inputs converted to int32, ``sinks`` to float32).
    Errors raise ValueError with the kernel's message.
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
    gm = None if global_mask is None else np.ascontiguousarray(global_mask, dtype=np.int32)
    ks = None if key_starts is None else np.ascontiguousarray(key_starts, dtype=np.int32)
    sk = None if sinks is None else np.ascontiguousarray(sinks, dtype=np.float32)
    args.global_mask = None if gm is None else gm.ctypes.data
    args.key_starts = None if ks is None else ks.ctypes.data
    args.sinks = None if sk is None else sk.ctypes.data
    args.num_threads = num_threads
    _call("cpu", args)
    return out


def cuda_forward(
    q,
    k,
    v,
    out,
    *,
    key_lengths=None,
    block_indices=None,
    global_mask=None,
    key_starts=None,
    sinks=None,
    scale=None,
    stream=0,
    workspace=None,
    **attrs: Any,
) -> None:
    """SparseAttention on the CUDA kernel, in place into ``out`` (contiguous device tensors).

    ``workspace`` is a device tensor of at least :func:`cuda_workspace_size` bytes (or None when
    that is 0); ``stream`` the raw cudaStream_t (e.g. ``torch.cuda.current_stream().cuda_stream``).
    """
    extra = (global_mask, key_starts, sinks)
    args = _device_args(q, k, v, key_lengths, block_indices, scale, attrs, *extra)
    args.o = out.data_ptr()
    args.stream = stream
    if workspace is not None:
        args.workspace = workspace.data_ptr()
        args.workspace_bytes = workspace.numel() * workspace.element_size()
    _call("cuda", args)


def cuda_workspace_size(
    q,
    k,
    v,
    *,
    key_lengths=None,
    block_indices=None,
    global_mask=None,
    key_starts=None,
    sinks=None,
    scale=None,
    **attrs: Any,
) -> int:
    """Bytes of device workspace :func:`cuda_forward` needs for these shapes and attributes."""
    extra = (global_mask, key_starts, sinks)
    args = _device_args(q, k, v, key_lengths, block_indices, scale, attrs, *extra)
    return _workspace_size(load(), args)


def _device_args(
    q, k, v, key_lengths, block_indices, scale, attrs, global_mask=None, key_starts=None, sinks=None
) -> SpattnArgs:
    """The struct for device tensors (int32 integer inputs, float32 sinks, all contiguous)."""
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
    args.global_mask = None if global_mask is None else global_mask.data_ptr()
    args.key_starts = None if key_starts is None else key_starts.data_ptr()
    args.sinks = None if sinks is None else sinks.data_ptr()
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
        *,
        global_mask: Any = None,
        key_starts: Any = None,
        sinks: Any = None,
    ) -> Callable[[], None]:
        """The argument struct and a large enough workspace, built once; returns a callable
        that launches (no host synchronization, allocation or planning: CUDA graph capturable).
        Errors of the call raise RuntimeError with the kernel's message."""
        import torch

        attrs = dict(attrs)
        scale = attrs.pop("scale", None)
        extra = (global_mask, key_starts, sinks)
        a = _device_args(q, k, v, key_lengths, block_indices, scale, attrs, *extra)
        a.o = out.data_ptr()
        a.stream = torch.cuda.current_stream().cuda_stream
        lib = load()
        need = _workspace_size(lib, a)
        if need and (self._ws is None or self._ws.numel() < need):
            self._ws = torch.empty(need, dtype=torch.uint8, device=q.device)
        if need:
            a.workspace = self._ws.data_ptr()
            a.workspace_bytes = self._ws.numel()
        err = ctypes.create_string_buffer(1024)
        # The callable holds the tensors whose pointers the struct carries.
        keep = (q, k, v, out, key_lengths, block_indices, *extra, self._ws)

        def call(a: SpattnArgs = a, keep: tuple = keep) -> None:
            if _forward(lib, "cuda", a, err) != 0:
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
        **inputs: Any,
    ) -> Any:
        """Launch once; returns ``out`` (a new NaN-filled tensor when None, so that rows the
        kernel does not write show)."""
        import torch

        if out is None:
            shape = tuple(q.shape[:3]) + (v.shape[3],)
            out = torch.full(shape, float("nan"), dtype=q.dtype, device=q.device)
        self.prepare(q, k, v, out, attrs, key_lengths, block_indices, **inputs)()
        return out
