"""benchmarks/bench_hf.py's bookkeeping (runs on the CPU, no timing): the memory guard stops and
records a run, failures and completed runs are recorded as such, the committed CPU results say
which runs did not complete, and ``--provider cuda`` without the CUDA EP is a clear error.

benchmarks/ is a folder of scripts, not a package: bench_hf.py is loaded from its path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_hf.py")
CPU_RESULTS = os.path.join(ROOT, "benchmarks", "results", "hf_cpu.json")

_spec = importlib.util.spec_from_file_location("bench_hf", SCRIPT)
assert _spec is not None and _spec.loader is not None
bench_hf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_hf)


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_guard_stops_a_run_over_its_memory_limit() -> None:
    # says its phase, writes 400 MiB (so resident), then waits to be stopped; the limit is 200 MiB
    code = (
        "import sys, time; print('phase: prefill', file=sys.stderr, flush=True); "
        "b = b'x' * (400 << 20); time.sleep(120)"
    )
    row = bench_hf.run_guarded(_child(code), max_rss=200 << 20, timeout_s=100, gpu=False)
    assert row["status"].startswith("exceeded 0.195312 GiB RSS after "), row
    assert row["peak_rss_bytes"] > 200 << 20
    assert row["phase"] == "prefill"
    assert "prefill_s" not in row and row["wall_s"] < 100


def test_guard_records_a_timeout_and_a_failure() -> None:
    row = bench_hf.run_guarded(_child("import time; time.sleep(60)"), None, 1.0, gpu=False)
    assert row["status"] == "timed out after 1 s"
    code = "import sys; sys.exit('--provider cuda: no CUDAExecutionProvider')"
    row = bench_hf.run_guarded(_child(code), None, 60.0, gpu=False)
    assert row["error"] == "--provider cuda: no CUDAExecutionProvider"
    assert row["returncode"] == 1 and "status" not in row


def test_guard_passes_a_completed_run_through() -> None:
    code = "import json; print('noise'); print(json.dumps({'prefill_s': 1.5, 'peak_rss_bytes': 7}))"
    row = bench_hf.run_guarded(_child(code), 1 << 30, 60.0, gpu=False)
    assert row["prefill_s"] == 1.5 and row["peak_rss_bytes"] == 7 and "status" not in row


def test_committed_cpu_table_says_which_runs_did_not_complete(tmp_path) -> None:
    results = json.loads(open(CPU_RESULTS).read())
    text = bench_hf.table(results)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    for exporter, runs in results["runs"].items():
        for L, r in runs.items():
            cell = rows[L].split("|")[2].split(" / ")[bench_hf.EXPORTERS.index(exporter)].strip()
            if bench_hf._completed(r):
                assert cell.endswith(" s") or cell.endswith(" ms"), cell
            else:
                assert cell.startswith("did not complete ("), cell
                assert r.get("status") or r.get("error")
    bench_hf.plot(results, str(tmp_path / "hf.png"))
    assert (tmp_path / "hf.png").stat().st_size > 10_000


def test_cuda_provider_without_the_cuda_ep_is_a_clear_error(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP; the error case needs one without it")
    r = subprocess.run(
        [sys.executable, SCRIPT, "--provider", "cuda", "--gpu-pack", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "--provider cuda: this onnxruntime has no CUDAExecutionProvider" in r.stderr
    assert "onnxruntime-gpu" in r.stderr
