"""The GPU benchmark scripts on a machine where PyTorch sees no CUDA device: each stops at its
start with a message that names the cause and the fix, never a traceback from inside torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# (script, arguments that get it past its argument parsing)
SCRIPTS = [
    ("bench_cuda.py", []),
    ("bench_hopper.py", ["--plan", "full"]),
    ("bench_ort_cuda.py", []),
    ("pairs_choice.py", ["--out", "unused"]),
    ("profile_one.py", []),
    ("decode_timeline.py", []),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for machines without CUDA")
@pytest.mark.parametrize("script,args", SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_stops_with_what_to_fix(script, args, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(ROOT, "exporter"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert err.startswith(f"{script} times kernels on an NVIDIA GPU"), err
    assert ("CPU-only build" in err) == (torch.version.cuda is None), err
    assert "CUDA build of torch" in err
    assert not os.listdir(tmp_path)  # nothing written before the check
