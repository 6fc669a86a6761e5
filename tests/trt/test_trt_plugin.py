"""The TensorRT plugin through its C++ harness (tests/trt/trt_harness.cc), which drives
libspattn_trt.so the way TensorRT does: getCreators, the fields TensorRT's ONNX parser makes of
exported nodes, the build-phase methods, enqueue on the GPU against the CPU kernel, serialization,
several execution contexts, bad fields and shapes, and enqueue time against the direct launch.

Without a GPU the harness runs only the checks that launch nothing; the GPU tests skip.
Environment: SPATTN_TRT_HARNESS, SPATTN_TRT_LIB (paths), SPATTN_TRT_NODES (a nodes.txt of
tests/trt/export_nodes.py, instead of exporting here).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _harness() -> str | None:
    env = os.environ.get("SPATTN_TRT_HARNESS")
    if env:
        return env
    found = sorted(
        glob.glob(str(REPO / "build" / "*" / "trt_plugins" / "harness" / "spattn_trt_harness")),
        key=os.path.getmtime,
    )
    return found[-1] if found else None


def _plugin(harness: str) -> str | None:
    env = os.environ.get("SPATTN_TRT_LIB")
    if env:
        return env
    beside = Path(harness).resolve().parent.parent / "libspattn_trt.so"
    if beside.is_file():
        return str(beside)
    try:
        from spattn.runtime import library_path

        return library_path("trt")
    except (ImportError, FileNotFoundError):
        return None


def _has_gpu() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    return False


HARNESS = _harness()
PLUGIN = _plugin(HARNESS) if HARNESS else None
pytestmark = pytest.mark.skipif(
    HARNESS is None or PLUGIN is None,
    reason="the TensorRT plugin and its harness are not built (they need nvcc and TensorRT "
    "headers; see trt_plugins/CMakeLists.txt)",
)
needs_gpu = pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU visible")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> str:
    env = os.environ.get("SPATTN_TRT_NODES")
    if env:
        return env
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("trt_nodes")
    subprocess.run(
        [sys.executable, str(HERE / "export_nodes.py"), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(out / "nodes.txt")


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [HARNESS, "--plugin", PLUGIN, *args], capture_output=True, text=True, timeout=timeout
    )
    print(p.stdout[-6000:], p.stderr[-2000:])
    return p


def test_harness_tolerances_are_the_table():
    """The harness compares with spattn.tolerances' table: its build generated the header from
    the same file (tolerances.json), and it prints what it was built with."""
    from spattn.tolerances import TOLERANCES

    p = subprocess.run([HARNESS, "--print-tolerances"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = {}
    for line in p.stdout.splitlines():
        name, atol, rtol = line.split()
        got[name] = (float(atol), float(rtol))
    want = {k: v for k, v in TOLERANCES.items() if isinstance(k, str)}
    assert got == want


def test_plugin_library_without_gpu(nodes):
    """Library entry points, creator fields, parser fields, bad fields and shapes (no launch)."""
    p = _run("--nodes", nodes)
    fails = [ln for ln in p.stdout.splitlines() if ln.startswith("FAIL")]
    assert not fails and p.returncode == 0, "\n".join(fails) or p.stderr


@pytest.mark.gpu
@needs_gpu
def test_plugin_on_gpu(nodes):
    """Everything above plus enqueue vs the CPU kernel (fp32/fp16/bf16), serialization round trip
    and two execution contexts."""
    p = _run("--nodes", nodes)
    assert "no CUDA device" not in p.stdout
    fails = [ln for ln in p.stdout.splitlines() if ln.startswith("FAIL")]
    assert not fails and p.returncode == 0, "\n".join(fails) or p.stderr
    assert re.search(r"enqueue vs CPU kernel", p.stdout)


@pytest.mark.gpu
@needs_gpu
def test_plugin_enqueue_overhead():
    """Plugin enqueue within 3% of the direct launch of the shared kernel (CUDA events, medians)."""
    p = _run("--bench-only")
    bench = [ln for ln in p.stdout.splitlines() if ln.startswith("BENCH")]
    assert bench, p.stdout
    fails = [ln for ln in p.stdout.splitlines() if ln.startswith("FAIL")]
    assert not fails and p.returncode == 0, "\n".join(bench + fails)
