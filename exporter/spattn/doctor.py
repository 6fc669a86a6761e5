"""What is installed and usable here: versions, spattn's libraries, backends and how to get them.

Used by ``spattn doctor``. Nothing here raises on a missing component: it is reported with the
step that installs it.

Examples
--------
>>> from spattn import doctor
>>> print(doctor.render(doctor.collect()))  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["collect", "render", "onnxruntime_library", "sample_binary"]


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def onnxruntime_library() -> str | None:
    """Path of the onnxruntime wheel's ``libonnxruntime.so*`` (for the C++ sample)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        hits = sorted(glob.glob(os.path.join(root, "capi", "libonnxruntime.so*")))
        hits += sorted(glob.glob(os.path.join(root, "capi", "libonnxruntime*.dylib")))
        if hits:
            return hits[0]
    return None


def sample_binary() -> str | None:
    """Path of the C++ sample ``spattn_run_model`` (installed package, else a CMake build)."""
    pkg = Path(__file__).resolve().parent
    cands = [pkg / "bin" / "spattn_run_model"]
    cands += [
        Path(p)
        for p in sorted(
            glob.glob(str(pkg.parents[1] / "build" / "*" / "samples" / "spattn_run_model"))
        )
    ]
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def _torch_info() -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"version": None}
    try:
        import torch
    except Exception as e:  # a broken install
        return {"version": None, "error": str(e)}
    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
    }
    if info["cuda_available"]:
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _ort_info() -> dict[str, Any]:
    dists = {d: _dist_version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
        version = ort.__version__
    except ImportError:
        providers, version = [], None
    return {
        "version": version,
        "distributions": {k: v for k, v in dists.items() if v},
        "providers": providers,
        "library": onnxruntime_library(),
    }


def _tensorrt_info() -> dict[str, Any]:
    version = None
    for d in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"):
        version = version or _dist_version(d)
    info: dict[str, Any] = {"version": version, "importable": False}
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            info["version"] = getattr(tensorrt, "__version__", version)
            info["importable"] = True
        except Exception as e:  # missing libnvinfer and the like
            info["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return info


def _cuda_info() -> dict[str, Any]:
    nvcc = _run(["nvcc", "--version"])
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    return {
        "nvcc": nvcc.splitlines()[-1] if nvcc else None,
        "gpus": smi.splitlines() if smi else [],
    }


def _libraries() -> dict[str, Any]:
    from .runtime import library_path

    libs: dict[str, Any] = {}
    for name in ("ort", "kernels", "trt"):
        try:
            libs[name] = library_path(name)
        except FileNotFoundError:
            libs[name] = None
    libs["kernels_have_cuda"] = None
    if libs["kernels"]:
        try:
            from . import capi

            libs["kernels_have_cuda"] = capi.has_cuda()
        except (OSError, AttributeError):
            pass
    return libs


def collect() -> dict[str, Any]:
    """Everything ``spattn doctor`` reports, as a dict (the ``--json`` output)."""
    from .runners import BACKENDS, backend_status

    backends: dict[str, Any] = {}
    for b in BACKENDS:
        ok, detail = backend_status(b)
        backends[b] = {"usable": ok, "detail": detail if ok else "", "how": "" if ok else detail}
    tc = importlib.util.find_spec("tritonclient") is not None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "spattn": {"version": __version__, "location": str(Path(__file__).resolve().parent)},
        "torch": _torch_info(),
        "onnx": _dist_version("onnx"),
        "onnxruntime": _ort_info(),
        "tensorrt": _tensorrt_info(),
        "cuda": _cuda_info(),
        "libraries": _libraries(),
        "cpp_sample": sample_binary(),
        "tritonclient": _dist_version("tritonclient") if tc else None,
        "backends": backends,
    }


def render(r: dict[str, Any]) -> str:
    """The report as text."""
    t, o, trt, cu, libs = r["torch"], r["onnxruntime"], r["tensorrt"], r["cuda"], r["libraries"]
    torch_line = (
        "not installed"
        if not t.get("version")
        else (
            f"{t['version']} (CUDA build: {t.get('cuda_build') or 'none'}, CUDA available: "
            f"{'yes' if t.get('cuda_available') else 'no'})"
        )
    )
    dists = ", ".join(f"{k} {v}" for k, v in o["distributions"].items()) or "not installed"
    lines = [
        f"spattn {r['spattn']['version']} at {r['spattn']['location']}",
        f"python {r['python']} on {r['platform']}",
        "",
        "versions:",
        f"  torch        {torch_line}",
        f"  onnx         {r['onnx'] or 'not installed'}",
        f"  onnxruntime  {dists}; providers: {', '.join(o['providers']) or '-'}",
        f"  TensorRT     {trt['version'] or 'not installed'}"
        + (f" (import fails: {trt['error']})" if trt.get("error") else ""),
        f"  CUDA         nvcc: {cu['nvcc'] or 'not found'}; GPUs: "
        f"{'; '.join(cu['gpus']) or 'none found (nvidia-smi)'}",
        "  tritonclient "
        + (
            r["tritonclient"]
            or "not installed (Triton configs are checked with spattn's subset of its schema)"
        ),
        "",
        "spattn libraries:",
        f"  libspattn_ort.so      {libs['ort'] or 'not found'}",
        f"  libspattn_kernels.so  {libs['kernels'] or 'not found'}"
        + (
            ""
            if libs["kernels_have_cuda"] is None
            else f" (CUDA kernels: {'yes' if libs['kernels_have_cuda'] else 'no'})"
        ),
        f"  libspattn_trt.so      {libs['trt'] or 'not found'}",
        f"  C++ sample            {r['cpp_sample'] or 'not built'}",
        f"  libonnxruntime.so     {o['library'] or 'not found'}",
        "",
        "backends:",
    ]
    for name, b in r["backends"].items():
        status = "usable" if b["usable"] else "missing"
        lines.append(f"  {name:<9} {status}" + (f": {b['how']}" if not b["usable"] else ""))
    return "\n".join(lines)
