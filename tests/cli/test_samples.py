"""The samples of samples/README.md that run on a CPU machine, as subprocesses with small sizes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import encoder_model

from spattn import doctor
from spattn.runners import backend_status
from spattn.runtime import library_path

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
TIMEOUT = 300


def spattn_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = shutil.which("spattn", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "spattn.cli"]


def run(cmd: list[str], cwd: Path, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_sample1_export_then_run_with_numpy_and_onnxruntime_only(tmp_path):
    model = tmp_path / "longformer_encoder.onnx"
    run(
        [
            *spattn_command(),
            "export",
            "longformer_encoder",
            "-o",
            model,
            "-p",
            "seq_len=32",
            "-p",
            "d_model=32",
            "-p",
            "nhead=2",
            "-p",
            "num_layers=1",
            "-p",
            "attention_window=8",
            "-p",
            "batch=1",
            "-q",
        ],
        tmp_path,
    )
    assert model.is_file() and (tmp_path / "longformer_encoder.report.json").is_file()
    # Runs the sample and then lists what it imported: neither torch nor spattn.
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['run_onnx.py', {str(model)!r}, '--seq-len', '48', '--batch', '2',\n"
        f"            '--repeats', '2', '--lib', {library_path('ort')!r}, '--output', 'o.npz']\n"
        f"runpy.run_path({str(SAMPLES / 'python' / 'run_onnx.py')!r}, run_name='__main__')\n"
        "print('imported:', sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'spattn', 'onnx'}))\n"
    )
    out = run([sys.executable, "-c", probe], tmp_path).stdout
    assert "shape [2, 48, 32]" in out and "finite True" in out
    assert "imported: []" in out
    assert (tmp_path / "o.npz").is_file()


def test_sample2_cpp_binary(tmp_path):
    binary, ort_lib = doctor.sample_binary(), doctor.onnxruntime_library()
    if binary is None:
        pytest.skip("spattn_run_model was not built (pip install . builds it into spattn/bin)")
    if ort_lib is None:
        pytest.skip("the onnxruntime wheel's libonnxruntime.so was not found")
    out = run(
        [binary, encoder_model(), library_path("ort"), ort_lib, "40", "2", "2"], tmp_path
    ).stdout
    assert "output" in out and "shape [2, 40, 32]" in out and "median run time" in out


def test_sample3_gqa_decoder_on_cpu(tmp_path):
    proc = run(
        [
            sys.executable,
            SAMPLES / "decoder_gqa.py",
            "--seq-len",
            "32",
            "--batch",
            "2",
            "--d-model",
            "32",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--window",
            "8",
            "--repeats",
            "2",
            "--out",
            tmp_path,
        ],
        tmp_path,
    )
    out = proc.stdout
    assert "ONNX Runtime CPU" in out and "PASSED" in out and "FAILED" not in out
    if not backend_status("ort-cuda")[0]:
        assert "CUDA: not run here" in out
    assert (tmp_path / "decoder_gqa.onnx").is_file()


@pytest.mark.skipif(backend_status("tensorrt")[0], reason="TensorRT is usable here")
def test_sample4_tensorrt_says_what_is_missing(tmp_path):
    proc = run(
        [sys.executable, SAMPLES / "tensorrt_engine.py", "--out", tmp_path], tmp_path, code=1
    )
    assert proc.stderr.startswith("error: TensorRT is not installed")
    assert proc.stderr.count("\n") == 1
