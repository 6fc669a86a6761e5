"""Backends and their runners: PyTorch, ONNX Runtime (CPU and CUDA execution providers, our
library registered) and TensorRT (through :mod:`spattn.trt`).

:func:`backend_status` says whether a backend is usable here and, when not, how to get it.
torch is imported only where PyTorch runs; TensorRT only where an engine is built or run.

Examples
--------
>>> from spattn import feeds, modelio, runners
>>> specs = modelio.input_specs(modelio.load_onnx("encoder.onnx"))  # doctest: +SKIP
>>> x = feeds.make_feeds(specs, batch=1, seq_len=256)  # doctest: +SKIP
>>> outs = runners.run_backend("ort-cpu", "encoder.onnx", specs, x)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .modelio import TensorSpec

__all__ = [
    "BACKENDS",
    "TENSORRT_MISSING",
    "backend_status",
    "tensorrt_status",
    "tensorrt_module",
    "OrtRunner",
    "run_torch",
    "run_tensorrt",
    "run_backend",
]

#: Backends in the order ``spattn verify`` lists them.
BACKENDS = ("pytorch", "ort-cpu", "ort-cuda", "tensorrt")


TENSORRT_MISSING = (
    "TensorRT is not installed: on a machine with an NVIDIA GPU run `pip install tensorrt-cu13` "
    "(`tensorrt-cu12` for CUDA 12, or NVIDIA's TensorRT packages), then rebuild spattn there "
    "with `pip install .` "
    "so that libspattn_trt.so is built"
)


def tensorrt_missing() -> str:
    """How to get TensorRT; the rebuild step only when libspattn_trt.so is not built yet."""
    from .runtime import library_path

    try:
        lib = library_path("trt")
    except FileNotFoundError:
        return TENSORRT_MISSING
    return (
        "TensorRT is not installed: run `pip install tensorrt-cu13` (`tensorrt-cu12` for CUDA "
        f"12, or NVIDIA's TensorRT packages); the plugin library is built already ({lib})"
    )


ORT_CUDA_MISSING = (
    "onnxruntime has no CUDA execution provider: on a machine with an NVIDIA GPU run "
    "`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`"
)


SPATTN_CUDA_MISSING = (
    "the spattn libraries were built without CUDA: rebuild with `pip install .` on a machine "
    "where nvcc (CUDA 12 or newer) is on PATH"
)


TORCH_MISSING = "PyTorch is not installed: `pip install torch` (or `pip install 'spattn[torch]'`)"


def backend_status(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for a backend; the reason of an unusable one says how to get it.

    Examples
    --------
    >>> backend_status("ort-cpu")  # doctest: +SKIP
    (True, '/.../libspattn_ort.so')
    """
    if name == "pytorch":
        if importlib.util.find_spec("torch") is None:
            return False, TORCH_MISSING
        return True, "torch " + _version("torch")
    if name in ("ort-cpu", "ort-cuda"):
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed: `pip install onnxruntime`"
        from .runtime import library_path

        try:
            lib = library_path("ort")
        except FileNotFoundError:
            return False, (
                "libspattn_ort.so was not found: install spattn with `pip install .` "
                "from the repository root, or point SPATTN_LIB_DIR at its folder"
            )
        if name == "ort-cpu":
            return True, lib
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, ORT_CUDA_MISSING
        if not _spattn_has_cuda():
            return False, SPATTN_CUDA_MISSING
        return True, lib
    if name == "tensorrt":
        return tensorrt_status()
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _spattn_has_cuda() -> bool:
    try:
        from . import capi

        return capi.has_cuda()
    except (OSError, FileNotFoundError, AttributeError):
        return False


def tensorrt_status() -> tuple[bool, str]:
    """``(usable, reason)`` for TensorRT with our plugin."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, tensorrt_missing()
    try:
        trt = importlib.import_module(".trt", __package__)
    except ImportError as e:
        return False, f"this spattn has no TensorRT support (spattn.trt: {e}); update spattn"
    from .runtime import library_path

    try:
        lib = library_path("trt")
    except FileNotFoundError:
        return False, (
            "libspattn_trt.so was not built: rebuild spattn with `pip install .` on "
            "a machine with nvcc and TensorRT (headers: SPATTN_TRT_INCLUDE_DIR)"
        )
    try:
        res = trt.available()
    except Exception as e:  # a broken TensorRT install raises many kinds of errors
        return False, f"TensorRT cannot be used here: {e}"
    ok, why = res if isinstance(res, tuple) else (bool(res), "")
    if not ok:
        return False, why or "TensorRT is installed but not usable here (no GPU or driver?)"
    return True, lib


def tensorrt_module() -> Any:
    """:mod:`spattn.trt`, or :class:`UserError` with the way to get TensorRT."""
    ok, reason = tensorrt_status()
    if not ok:
        raise UserError(reason)
    return importlib.import_module(".trt", __package__)


def ort_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Feeds as :func:`spattn.runtime.run_ort` takes them (bfloat16 as ``("bfloat16", bits)``)."""
    from .runtime import to_bfloat16_bits

    out: dict[str, Any] = {}
    for s in specs:
        a = feeds[s.name]
        out[s.name] = ("bfloat16", to_bfloat16_bits(a)) if s.elem_type == 16 else a
    return out


class OrtRunner:
    """An ONNX Runtime session with our library; ``runner(feeds)`` returns ``{name: array}``.

    bfloat16 outputs come back as float32.
    """

    def __init__(
        self,
        model: Any,
        specs: Sequence[TensorSpec],
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from . import runtime

        ok, reason = backend_status("ort-cuda" if device == "cuda" else "ort-cpu")
        if not ok:
            raise UserError(reason)
        proto, self.renamed = runtime._with_float_outputs(model)
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device == "cuda"
            else ["CPUExecutionProvider"]
        )
        try:
            self.session = runtime.ort_session(proto, providers, intra_op_threads=threads)
        except Exception as e:  # onnxruntime's own exception types
            bf16 = any(s.elem_type == 16 for s in specs)
            raise UserError(_ort_message(e, device, bf16)) from e
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise UserError(
                "ONNX Runtime could not start its CUDA execution provider (no GPU, "
                "or a CUDA/cuDNN mismatch); run `spattn doctor`"
            )
        self.specs = list(specs)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from . import runtime

        try:
            outs = runtime.run_ort(None, ort_feeds(self.specs, feeds), session=self.session)
        except Exception as e:
            raise UserError(_ort_message(e, "run")) from e
        return {self.renamed.get(k, k): v for k, v in outs.items()}


def _ort_message(e: Exception, where: str, bf16: bool = False) -> str:
    text = " ".join(str(e).split())
    if "NOT_IMPLEMENTED" in text and (bf16 or "bfloat16" in text.lower()):
        return (
            "ONNX Runtime's CPU provider has no bfloat16 kernels for some ops of this model "
            f"({text.split(' : ')[-1]}); run the bfloat16 model on CUDA (--backend ort-cuda) "
            "or export it in float32/float16"
        )
    if "SparseAttention" in text:
        i = text.find("SparseAttention:")
        detail = text[i:] if i >= 0 else text
        return f"ONNX Runtime rejected the model: {detail}"
    stage = "running the model" if where == "run" else "loading the model"
    return f"ONNX Runtime failed {stage}: {text}"


def run_torch(
    model: Any,
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    dtype: str = "float32",
    arg_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run a PyTorch model on the feeds; outputs as float32 numpy.

    The feeds are passed in ONNX input order, or as keywords named by ``arg_names`` (the
    ``forward`` parameter of each ONNX input) when given."""
    import torch

    tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    model = model.to(tdtype).eval()
    args = []
    for s in specs:
        t = torch.from_numpy(np.ascontiguousarray(feeds[s.name]))
        args.append(t.to(tdtype) if s.is_float else t)
    with torch.no_grad():
        try:
            if arg_names is not None:
                out = model(**dict(zip(arg_names, args, strict=True)))
            else:
                out = model(*args)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"the PyTorch model cannot run the ONNX model's inputs ({type(e).__name__}: "
                f"{first}); is it the model that was exported, built with the same parameters?"
            ) from e
    flat = _flatten(out)
    if len(flat) != len(output_names):
        raise UserError(
            f"the PyTorch model returns {len(flat)} tensor(s) but the ONNX model has "
            f"{len(output_names)} output(s); is it the model this factory exported?"
        )
    return {n: t.detach().float().cpu().numpy() for n, t in zip(output_names, flat, strict=True)}


def _flatten(x: Any) -> list[Any]:
    if hasattr(x, "detach"):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in _flatten(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flatten(v)]
    return []


def run_tensorrt(
    engine: str, specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run a TensorRT engine through :func:`spattn.trt.run_engine`; outputs as float32."""
    trt = tensorrt_module()
    if not Path(engine).is_file():
        raise UserError(f"{engine}: no such engine file; build one with `spattn build`")
    try:  # bfloat16 inputs are float32 arrays here; run_engine rounds them
        outs = trt.run_engine(engine, {s.name: feeds[s.name] for s in specs})
    except (RuntimeError, ValueError) as e:
        raise UserError(f"TensorRT failed: {' '.join(str(e).split())}") from e
    return {
        k: np.asarray(v).astype(np.float32)
        if np.asarray(v).dtype.kind == "f" or str(np.asarray(v).dtype) == "bfloat16"
        else np.asarray(v)
        for k, v in outs.items()
    }


def run_backend(
    name: str,
    model_path: str,
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    *,
    engine: str | None = None,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Run one ONNX-side backend (``ort-cpu``, ``ort-cuda`` or ``tensorrt``) once."""
    if name in ("ort-cpu", "ort-cuda"):
        runner = OrtRunner(model_path, specs, "cuda" if name == "ort-cuda" else "cpu", threads)
        return runner(feeds)
    if name == "tensorrt":
        if engine is None:
            raise UserError(
                "no TensorRT engine: build one with `spattn build MODEL.onnx -o "
                "ENGINE.plan` and pass it with --engine"
            )
        return run_tensorrt(engine, specs, feeds)
    raise ValueError(f"backend: expected ort-cpu, ort-cuda or tensorrt, got {name!r}")
