"""Run exported models with ONNX Runtime and the spattn custom-op library.

This module needs only numpy, onnx and onnxruntime (no torch): deployments import it alone.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LIBRARY_FILES", "library_path", "ort_session", "run_ort", "to_bfloat16_bits"]

if sys.platform == "win32":  # pragma: no cover
    _PREFIX, _SUFFIX = "", ".dll"
elif sys.platform == "darwin":  # pragma: no cover
    _PREFIX, _SUFFIX = "lib", ".dylib"
else:
    _PREFIX, _SUFFIX = "lib", ".so"

#: File name of each library: "ort" (ONNX Runtime custom ops), "kernels" (C API), "trt" (plugin).
LIBRARY_FILES = {
    "ort": f"{_PREFIX}spattn_ort{_SUFFIX}",
    "kernels": f"{_PREFIX}spattn_kernels{_SUFFIX}",
    "trt": f"{_PREFIX}spattn_trt{_SUFFIX}",
}
_BUILD_SUBDIRS = {"ort": "plugins", "kernels": "kernels", "trt": "trt_plugins"}


def _candidates(name: str) -> list[Path]:
    fname = LIBRARY_FILES[name]
    out: list[Path] = []
    env = os.environ.get("SPATTN_LIB_DIR")
    if env:
        for d in env.split(os.pathsep):
            out += [Path(d) / fname, Path(d) / "lib" / fname]
    pkg = Path(__file__).resolve().parent
    out.append(pkg / "lib" / fname)
    # From a source checkout (editable install) the package is <repo>/exporter/spattn/.
    repo = pkg.parents[1]
    build = repo / "build"
    if build.is_dir():
        sub = _BUILD_SUBDIRS[name]
        out += [Path(p) for p in sorted(glob.glob(str(build / "*" / sub / fname)))]
        out += [build / sub / fname]
        out += sorted(build.rglob(fname))
    return out


def library_path(name: str = "ort") -> str:
    """Path of a built spattn library: ``"ort"``, ``"kernels"`` or ``"trt"``.

    Searched in order: the directories of ``$SPATTN_LIB_DIR``, the package's ``lib/`` folder
    (installed wheel), then ``<repo>/build/*/<plugins|kernels|trt_plugins>/`` and anywhere under
    ``<repo>/build/`` (source tree).

    Raises
    ------
    FileNotFoundError
        When the library was not built, with the command that builds it.

    Examples
    --------
    >>> library_path("ort")  # doctest: +SKIP
    '/usr/lib/python3/site-packages/spattn/lib/libspattn_ort.so'
    """
    if name not in LIBRARY_FILES:
        raise ValueError(f"library name: expected one of {sorted(LIBRARY_FILES)}, got {name!r}")
    searched = _candidates(name)
    for p in searched:
        if p.is_file():
            return str(p)
    where = "\n  ".join(str(p) for p in searched[:8]) or "(nothing)"
    raise FileNotFoundError(
        f"spattn: {LIBRARY_FILES[name]} was not found. Build and install the package with "
        f"`pip install .` from the repository root (or a CMake build into build/), or point "
        f"SPATTN_LIB_DIR at the folder that holds it. Searched:\n  {where}"
    )


def _model_bytes(model: Any) -> bytes | str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, bytes):
        return model
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(f"model: expected a path, bytes or onnx.ModelProto, got {type(model)}")


# ONNX Runtime's memory pattern off in the sessions spattn creates. With it, the second run of
# an input shape allocates the first run's planned peak as one new block while the arena still
# holds the first run's chunks: a Mistral-like export's 16K prefill went from 0.95 GB resident
# after its first run to 1.69 GB after its second; without it the speed is the same or better
# (benchmarks/results/hf_graph_ab.json, docs/hf.md).
SESSION_MEM_PATTERN = False


def ort_session(
    model: Any,
    providers: Sequence[Any] = ("CPUExecutionProvider",),
    intra_op_threads: int | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` with the spattn custom-op library registered.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The model.
    providers : sequence
        Execution providers, as for ``InferenceSession``.
    intra_op_threads : int, optional
        ``SessionOptions.intra_op_num_threads``.

    Examples
    --------
    >>> sess = ort_session("model.onnx")  # doctest: +SKIP
    >>> sess.run(None, {"x": x})  # doctest: +SKIP
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.enable_mem_pattern = SESSION_MEM_PATTERN
    if intra_op_threads is not None:
        so.intra_op_num_threads = int(intra_op_threads)
    return ort.InferenceSession(_model_bytes(model), sess_options=so, providers=list(providers))


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even) and return the bits as uint16.

    Examples
    --------
    >>> to_bfloat16_bits(np.array([1.0], np.float32))
    array([16256], dtype=uint16)
    """
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = b + 0x7FFF + ((b >> 16) & 1)
    rounded = np.where(np.isnan(x), b | 0x00400000, rounded)  # keep NaNs NaN
    return (rounded >> 16).astype(np.uint16)


def _is_bf16(a: Any) -> bool:
    return getattr(a, "dtype", None) is not None and a.dtype.name == "bfloat16"


def _with_float_outputs(model: Any) -> tuple[Any, dict[str, str]]:
    """Copy of the model whose bfloat16 outputs are cast to float32 (numpy has no bfloat16)."""
    import onnx
    from onnx import TensorProto, helper

    proto = (
        onnx.load(str(model))
        if isinstance(model, (str, os.PathLike))
        else (onnx.load_from_string(model) if isinstance(model, bytes) else model)
    )
    bf16 = [o for o in proto.graph.output if o.type.tensor_type.elem_type == TensorProto.BFLOAT16]
    if not bf16:
        return model, {}
    proto2 = onnx.ModelProto()
    proto2.CopyFrom(proto)
    renamed: dict[str, str] = {}
    for out in proto2.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.BFLOAT16:
            continue
        new = f"{out.name}__float32"  # run_ort maps the suffix back
        proto2.graph.node.append(helper.make_node("Cast", [out.name], [new], to=TensorProto.FLOAT))
        renamed[new] = out.name
        out.name = new
        out.type.tensor_type.elem_type = TensorProto.FLOAT
    return proto2, renamed


def run_ort(
    model: Any,
    feeds: Mapping[str, Any],
    output_names: Iterable[str] | None = None,
    providers: Sequence[Any] = ("CPUExecutionProvider",),
    intra_op_threads: int | None = None,
    session: Any = None,
) -> dict[str, np.ndarray]:
    """Run a model once; returns ``{output name: array}``.

    bfloat16 inputs may be given as ``ml_dtypes.bfloat16`` arrays or as ``("bfloat16", uint16
    bits)`` pairs; bfloat16 outputs are returned as float32 (exact: every bfloat16 is a float32).

    Examples
    --------
    >>> outs = run_ort("model.onnx", {"x": np.ones((1, 4, 8), np.float32)})  # doctest: +SKIP
    """
    import onnxruntime as ort
    from onnx import TensorProto

    renamed: dict[str, str] = {}
    if session is None:
        model, renamed = _with_float_outputs(model)
        session = ort_session(model, providers, intra_op_threads)
    names = [o.name for o in session.get_outputs()]
    suffix = "__float32"
    renamed.update({n: n[: -len(suffix)] for n in names if n.endswith(suffix)})
    if output_names is not None:
        inv = {v: k for k, v in renamed.items()}
        names = [inv.get(n, n) for n in output_names]
    values: dict[str, Any] = {}
    use_ort_values = False
    for k, a in feeds.items():
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "bfloat16":
            values[k] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(a[1], dtype=np.uint16), TensorProto.BFLOAT16
            )
            use_ort_values = True
        elif _is_bf16(a):
            values[k] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(a).view(np.uint16), TensorProto.BFLOAT16
            )
            use_ort_values = True
        else:
            values[k] = np.ascontiguousarray(a)
    if use_ort_values:
        vals = {
            k: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v)
            for k, v in values.items()
        }
        outs = [o.numpy() for o in session.run_with_ort_values(names, vals)]
    else:
        outs = session.run(names, values)
    return {renamed.get(n, n): o for n, o in zip(names, outs, strict=True)}
