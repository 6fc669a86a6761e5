"""TensorRT: build and run engines of exported models with the spattn plugin.

The plugin (``libspattn_trt.so``) implements ``spattn::SparseAttention`` for TensorRT; the exported
``.onnx`` file parses in TensorRT's ONNX parser as it is. This module imports without TensorRT;
its functions raise a ``RuntimeError`` naming the missing package.

Examples
--------
>>> from spattn import trt
>>> ok, why = trt.available()  # doctest: +SKIP
>>> trt.build_engine("model.onnx", "model.plan",
...                  min_shapes={"x": (1, 16, 64)}, opt_shapes={"x": (1, 1024, 64)},
...                  max_shapes={"x": (4, 4096, 64)})  # doctest: +SKIP
'model.plan'
>>> outs = trt.run_engine("model.plan", {"x": x})  # doctest: +SKIP

Outputs are compared with other backends by :func:`spattn.compare.compare_outputs`
(``spattn verify``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import library_path, to_bfloat16_bits

__all__ = ["available", "load_plugin_library", "build_engine", "run_engine"]

_INSTALL = (
    "install TensorRT for Python: `pip install tensorrt-cu13` (CUDA 13; `tensorrt-cu12` for "
    "CUDA 12), or NVIDIA's TensorRT packages (tar, deb/rpm or the NGC container)"
)
_PLUGIN = ("SparseAttention", "1", "spattn")  # op_type, plugin_version, plugin_namespace
_loaded: dict[str, ctypes.CDLL] = {}


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeError(
            f"spattn.trt: the package `tensorrt` is not installed; {_INSTALL}"
        ) from e
    return tensorrt


def available() -> tuple[bool, str]:
    """Whether TensorRT and the plugin library can be used here, and a message saying why not.

    Examples
    --------
    >>> ok, message = available()
    >>> isinstance(ok, bool) and isinstance(message, str)
    True
    """
    try:
        trt = _tensorrt()
    except RuntimeError as e:
        return False, str(e)
    try:
        path = library_path("trt")
    except FileNotFoundError as e:
        return False, f"TensorRT {trt.__version__} is installed, but: {e}"
    return True, f"TensorRT {trt.__version__}, plugin library {path}"


def load_plugin_library(path: str | os.PathLike | None = None) -> str:
    """Load ``libspattn_trt.so`` (ctypes) and make sure TensorRT's plugin registry has the creator.

    Loading the library into a process with TensorRT registers the creator; where TensorRT was
    imported after an earlier load, ``IPluginRegistry.load_library`` registers it. Returns the path.

    Examples
    --------
    >>> load_plugin_library()  # doctest: +SKIP
    '/usr/lib/python3/site-packages/spattn/lib/libspattn_trt.so'
    """
    path = str(path) if path is not None else library_path("trt")
    try:  # TensorRT first, so that the load-time registration finds its registry
        trt = _tensorrt()
    except RuntimeError:
        trt = None
    if path not in _loaded:
        _loaded[path] = ctypes.CDLL(path)
    if trt is not None:
        registry = trt.get_plugin_registry()
        if registry.get_creator(*_PLUGIN) is None:
            registry.load_library(path)
        if registry.get_creator(*_PLUGIN) is None:
            raise RuntimeError(
                f"spattn.trt: {path} did not register {_PLUGIN[0]} version "
                f"{_PLUGIN[1]} in namespace {_PLUGIN[2]!r} with TensorRT"
            )
    return path


def _logger(trt: Any, verbose: bool = False) -> Any:
    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                print(f"[TensorRT] error: {msg}")
            elif severity == trt.ILogger.Severity.WARNING or verbose:
                print(f"[TensorRT] {msg}")

    return _Logger()


def _progress_monitor(trt: Any) -> Any:
    """An ``IProgressMonitor`` showing TensorRT's build phases as tqdm bars (None if unusable)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0
            p = parent_phase
            while p is not None and p in self.bars:
                depth += 1
                p = getattr(self.bars[p], "_spattn_parent", None)
            bar = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0)
            bar._spattn_parent = parent_phase
            self.bars[phase_name] = bar

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _Monitor()


def _profile_shapes(
    network: Any,
    min_shapes: Mapping[str, Any] | None,
    opt_shapes: Mapping[str, Any] | None,
    max_shapes: Mapping[str, Any] | None,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) per dynamic input; a missing bound defaults to the given ones."""
    out = {}
    missing = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(t.shape)
        if all(d >= 0 for d in shape):
            continue
        given = [None if s is None else s.get(t.name) for s in (min_shapes, opt_shapes, max_shapes)]
        known = [g for g in given if g is not None]
        if not known:
            missing.append(f"{t.name} {list(shape)}")
            continue
        lo, opt, hi = (
            tuple(int(x) for x in (g if g is not None else known[-1 if k else 0]))
            for k, g in enumerate(given)
        )
        for s in (lo, opt, hi):
            if len(s) != len(shape) or any(
                d >= 0 and d != x for d, x in zip(shape, s, strict=True)
            ):
                raise ValueError(
                    f"shapes for input {t.name!r}: expected rank {len(shape)} "
                    f"matching {list(shape)} (-1 dynamic), got {list(s)}"
                )
        out[t.name] = (lo, opt, hi)
    if missing:
        raise ValueError(
            "dynamic inputs need shapes (min_shapes/opt_shapes/max_shapes, "
            "{name: shape}): " + ", ".join(missing)
        )
    return out


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    min_shapes: Mapping[str, Any] | None = None,
    opt_shapes: Mapping[str, Any] | None = None,
    max_shapes: Mapping[str, Any] | None = None,
    strongly_typed: bool = True,
    fp16: bool = False,
    bf16: bool = False,
    workspace_mb: int = 4096,
    timing_cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> str:
    """Build a TensorRT engine (plan file) from an exported model, with the spattn plugin.

    Parameters
    ----------
    onnx_path, engine_path : path
        The exported model and where to write the engine.
    min_shapes, opt_shapes, max_shapes : dict, optional
        ``{input name: shape}`` of the optimization profile for inputs with dynamic dims (batch,
        sequence). A bound not given takes the others' value (only ``opt_shapes``: a static engine).
    strongly_typed : bool
        Precision from the ONNX graph (export in float16/bfloat16 for a half-precision engine).
        TensorRT 11 builds only strongly typed networks.
    fp16, bf16 : bool
        TensorRT 10 weak typing: let the builder pick float16/bfloat16 kernels
        (``strongly_typed=False`` only).
    workspace_mb : int
        Builder workspace limit.
    timing_cache : path, optional
        Timing cache file, read if it exists and written after the build.
    progress : bool
        Show the build phases as tqdm progress bars.

    Returns
    -------
    str
        ``engine_path``.

    Examples
    --------
    >>> shapes = {"x": (1, 512, 64)}
    >>> build_engine("encoder.onnx", "encoder.plan", opt_shapes=shapes)  # doctest: +SKIP
    'encoder.plan'
    """
    trt = _tensorrt()
    if strongly_typed and (fp16 or bf16):
        raise ValueError(
            "fp16/bf16 are weak-typing flags: with strongly_typed=True the precision "
            "comes from the ONNX graph (export with dtype='float16' or 'bfloat16')"
        )
    load_plugin_library()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strong_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and strong_flag is not None:
        flags |= 1 << int(strong_flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for wanted, name in ((fp16, "FP16"), (bf16, "BF16")):
        if wanted:
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is None:
                raise RuntimeError(
                    f"TensorRT {trt.__version__} has no BuilderFlag.{name} (weak "
                    "typing was removed): export the model in that precision"
                )
            config.set_flag(flag)
    shapes = _profile_shapes(network, min_shapes, opt_shapes, max_shapes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if progress:
        monitor = _progress_monitor(trt)
        if monitor is not None:
            config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(
            f"TensorRT could not build an engine from {onnx_path}:\n  "
            + "\n  ".join(logger.errors or ["(no error message)"])
        )
    Path(engine_path).write_bytes(bytes(plan))
    if cache is not None and timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return str(engine_path)


class _Device:
    """Device buffers through torch (if it has CUDA) or the CUDA runtime library (ctypes)."""

    def __init__(self) -> None:
        self.torch = None
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
        except ImportError:
            pass
        self.cudart: Any = None  # ctypes.CDLL of libcudart when torch has no CUDA
        if self.torch is None:
            names = [
                ctypes.util.find_library("cudart"),
                "libcudart.so.13",
                "libcudart.so.12",
                "libcudart.so",
            ]
            for name in filter(None, names):
                try:
                    self.cudart = ctypes.CDLL(name)
                    break
                except OSError:
                    continue
            if self.cudart is None:
                raise RuntimeError(
                    "spattn.trt.run_engine needs device memory: install torch with "
                    "CUDA or the CUDA runtime (`pip install nvidia-cuda-runtime`)"
                )
        self.buffers: list[Any] = []

    def upload(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        if self.torch is not None:
            t = self.torch.from_numpy(a.view(np.uint8).copy()).cuda()
            self.buffers.append(t)
            return int(t.data_ptr())
        p = self.alloc(a.nbytes)
        self._check(
            self.cudart.cudaMemcpy(
                ctypes.c_void_p(p), a.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(a.nbytes), 1
            )
        )
        return p

    def alloc(self, nbytes: int) -> int:
        nbytes = max(int(nbytes), 1)
        if self.torch is not None:
            t = self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")
            self.buffers.append(t)
            return int(t.data_ptr())
        p = ctypes.c_void_p()
        self._check(self.cudart.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(nbytes)))
        self.buffers.append(p)
        return int(p.value or 0)

    def download(self, ptr: int, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, np.uint8)
        if self.torch is not None:
            self.torch.cuda.synchronize()
            src = next(b for b in self.buffers if int(b.data_ptr()) == ptr)
            out[:] = src[:nbytes].cpu().numpy()
            return out
        self._check(
            self.cudart.cudaMemcpy(
                out.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_void_p(ptr),
                ctypes.c_size_t(nbytes),
                2,
            )
        )
        return out

    def synchronize(self) -> None:
        if self.torch is not None:
            self.torch.cuda.synchronize()
        else:
            self._check(self.cudart.cudaDeviceSynchronize())

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise RuntimeError(f"CUDA runtime error {rc}")

    def close(self) -> None:
        if self.cudart is not None:
            for p in self.buffers:
                self.cudart.cudaFree(p)
        self.buffers.clear()


def _to_device_dtype(a: Any, np_dtype: Any, is_bf16: bool) -> np.ndarray:
    if is_bf16:
        if isinstance(a, tuple) and a[0] == "bfloat16":
            return np.ascontiguousarray(a[1], dtype=np.uint16)
        arr = np.asarray(a)
        if arr.dtype.name == "bfloat16":
            return arr.view(np.uint16)
        return to_bfloat16_bits(arr.astype(np.float32))
    return np.ascontiguousarray(np.asarray(a), dtype=np_dtype)


def run_engine(engine_path: str | os.PathLike, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run an engine once on host arrays; returns ``{output name: array}``.

    bfloat16 inputs may be float32 arrays (rounded here), ``ml_dtypes.bfloat16`` arrays or
    ``("bfloat16", uint16 bits)`` pairs; bfloat16 outputs come back as float32.

    Examples
    --------
    >>> run_engine("encoder.plan", {"x": np.zeros((1, 512, 64), np.float32)})  # doctest: +SKIP
    {'output': array(...)}
    """
    trt = _tensorrt()
    load_plugin_library()
    logger = _logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise RuntimeError(
            f"TensorRT could not load {engine_path}:\n  "
            + "\n  ".join(logger.errors or ["(no error message)"])
        )
    context = engine.create_execution_context()
    dev = _Device()
    try:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        missing = set(inputs) - set(feeds)
        if missing:
            raise ValueError(f"feeds: missing inputs {sorted(missing)}")
        for name in inputs:
            dt = engine.get_tensor_dtype(name)
            is_bf16 = dt == getattr(trt.DataType, "BF16", None)
            a = _to_device_dtype(feeds[name], None if is_bf16 else trt.nptype(dt), is_bf16)
            context.set_input_shape(name, a.shape)
            context.set_tensor_address(name, dev.upload(a))
        out_meta = {}
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            dt = engine.get_tensor_dtype(name)
            is_bf16 = dt == getattr(trt.DataType, "BF16", None)
            np_dt = np.dtype(np.uint16) if is_bf16 else np.dtype(trt.nptype(dt))
            nbytes = int(np.prod(shape)) * np_dt.itemsize
            ptr = dev.alloc(nbytes)
            context.set_tensor_address(name, ptr)
            out_meta[name] = (ptr, nbytes, shape, np_dt, is_bf16)
        stream = 0
        if dev.torch is not None:
            stream = dev.torch.cuda.current_stream().cuda_stream
        if not context.execute_async_v3(stream):
            raise RuntimeError(
                f"TensorRT could not run {engine_path}:\n  "
                + "\n  ".join(logger.errors or ["(no error message)"])
            )
        dev.synchronize()
        result = {}
        for name, (ptr, nbytes, shape, np_dt, is_bf16) in out_meta.items():
            a = dev.download(ptr, nbytes).view(np_dt).reshape(shape)
            if is_bf16:
                a = (a.astype(np.uint32) << 16).view(np.float32)
            result[name] = a
        return result
    finally:
        dev.close()
