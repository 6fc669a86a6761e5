"""benchmarks/bench_hf.py's bookkeeping (runs on the CPU, no timing): the memory guard stops and
records a run, failures and completed runs are recorded as such, the committed CPU results say
which runs did not complete and how exact each exporter is, a measuring child reports its own
peak memory, and ``--provider cuda`` without the CUDA EP is a clear error.

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
    lines = text.split("\n\n")[0].splitlines()[2:]
    rows = {line.split("|")[1].strip(): line for line in lines}
    names = [e for e in bench_hf.EXPORTERS if e in results["runs"]]
    for exporter, runs in results["runs"].items():
        for L, r in runs.items():
            cell = rows[L].split("|")[2].split(" / ")[names.index(exporter)].strip()
            if bench_hf._completed(r):
                assert cell.endswith(" s") or cell.endswith(" ms"), cell
            else:
                assert cell.startswith("did not complete ("), cell
                assert r.get("status") or r.get("error")
    bench_hf.plot(results, str(tmp_path / "hf.png"))
    assert (tmp_path / "hf.png").stat().st_size > 10_000


def test_committed_cpu_results_compare_exactness_past_the_window() -> None:
    # every exporter of the committed CPU file has its logits against the eager model's, and
    # the table prints them: spattn's within float32 rounding everywhere
    results = json.loads(open(CPU_RESULTS).read())
    text = bench_hf.table(results)
    for exporter, runs in results["runs"].items():
        exact = [r["exactness"] for r in runs.values() if "exactness" in r]
        assert exact, exporter
        assert f"| {bench_hf.NAMES[exporter]} ({exact[0]['exact_length']} tokens) |" in text
        assert exact[0]["exact_length"] > results["config"]["sliding_window"]
    for x in (r["exactness"] for r in results["runs"]["spattn"].values() if "exactness" in r):
        assert x["max_abs_diff"] < 1e-4 and x["max_abs_diff_past_window"] < 1e-4


def test_table_lists_each_exporter_and_its_exactness() -> None:
    row = {
        "prefill_s": 0.5,
        "decode_tokens_per_s": 100.0,
        "kv_cache_bytes_after_prefill": 2e6,
        "peak_rss_bytes": 3e8,
    }
    exact = {"exact_length": 1024, "max_abs_diff": 3e-6, "max_abs_diff_within_window": 2e-6}
    results = {
        "config": bench_hf.CONFIG,
        "runs": {
            "spattn": {"2048": {**row, "exactness": {**exact, "max_abs_diff_past_window": 3e-6}}},
            "genai": {
                "2048": {
                    **row,
                    "prefill_s": 2.5,
                    "exactness": {**exact, "max_abs_diff": 1.5, "max_abs_diff_past_window": 1.5},
                },
                "8192": {"status": "exceeded 16 GiB RSS after 9 s", "peak_rss_bytes": 2e10},
            },
        },
    }
    text = bench_hf.table(results)
    assert "| L | prefill spattn / GenAI |" in text
    assert "| 2048 | 500 ms / 2.5 s |" in text
    assert "| 8192 | not run / did not complete (exceeded 16 GiB RSS after 9 s) |" in text
    assert "| spattn (1024 tokens) | 3e-06 | 3e-06 |" in text
    assert "| GenAI (1024 tokens) | 1.5 | 1.5 |" in text


def test_measuring_child_reports_its_own_peak_memory() -> None:
    # Linux folds the RSS of the image execve replaces into ru_maxrss: a child started by a
    # parent holding 300 MB reported them as its own before _peak_rss read VmHWM
    held = bytearray(300 << 20)
    held[::4096] = b"x" * len(held[::4096])
    code = (
        f"import importlib.util; s = importlib.util.spec_from_file_location('b', {SCRIPT!r}); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m._peak_rss())"
    )
    out = subprocess.run(_child(code), capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout.split()[-1]) < 150 << 20
    del held


def test_model_presets_and_a_work_folder_of_another_model(tmp_path) -> None:
    try:
        bench_hf.use_model("wide")
        assert (bench_hf.CONFIG["hidden_size"], bench_hf.CONFIG["head_dim"]) == (2048, 128)
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text(json.dumps(bench_hf.MODELS["small"]))
        with pytest.raises(SystemExit, match="holds another model"):
            bench_hf._hf_model(tmp_path)
    finally:
        bench_hf.use_model("small")
    assert bench_hf.CONFIG == bench_hf.MODELS["small"]


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
