"""The committed GPU result files and the table made from them agree (runs on the CPU).

benchmarks/ is a folder of scripts, not a package: summarize_cuda.py is loaded from its path.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRIPT = os.path.join(ROOT, "benchmarks", "summarize_cuda.py")
TABLE = os.path.join(RESULTS, "cuda_h100_vs_alternatives.md")

_spec = importlib.util.spec_from_file_location("summarize_cuda", SCRIPT)
assert _spec is not None and _spec.loader is not None
summarize_cuda = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize_cuda)

# The current H100 runs; earlier versions live in results/archive/ and are not summarized.
FILES = sorted(glob.glob(os.path.join(RESULTS, "cuda_h100_L*.json")))


def test_result_files_exist():
    assert FILES, "no benchmarks/results/cuda_h100_L*.json"


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_file_names_its_command_and_device(path):
    with open(path) as f:
        meta = json.load(f)["meta"]
    assert "benchmarks/bench_cuda.py" in meta["command"]
    assert "H100" in meta["device"]
    assert "--ort" in meta["command"] and meta["onnxruntime"]


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_ort_rows_equal_the_direct_launch(path):
    rows = summarize_cuda.load([path])
    fp16 = [r for r in rows if r["dtype"] == "float16"]
    assert fp16
    for r in fp16:
        assert r["ort_output_equals_direct"] is True, (r["key"], r["L"], r["D"])
        impl = r["impl"]
        want = impl["spattn_ort_streamed"]["median_ms"] / impl["spattn_streamed"]["median_ms"]
        assert r["ort_over_direct_streamed"] == pytest.approx(want)


def test_committed_table_is_current():
    table = summarize_cuda.markdown(summarize_cuda.load(FILES))
    with open(TABLE) as f:
        committed = f.read()
    assert committed.endswith(table), "rerun: python3 benchmarks/summarize_cuda.py --md ..."


def test_every_current_file_is_in_the_table():
    with open(TABLE) as f:
        committed = f.read()
    for path in FILES:
        assert f"| {os.path.basename(path)} |" in committed, path


def test_script_default_reads_the_current_files(tmp_path):
    # The command the index gives, with its default file list, writes the committed table.
    out = tmp_path / "table.md"
    subprocess.run([sys.executable, SCRIPT, "--md", str(out)], check=True, cwd=ROOT)
    with open(TABLE) as f:
        assert out.read_text() == f.read()


def test_table_ratio_is_flex_over_spattn():
    rows = summarize_cuda.load(FILES)
    r = next(r for r in rows if r["impl"].get("flex"))
    want = r["impl"]["flex"]["median_ms"] / r["impl"]["spattn"]["median_ms"]
    line = next(ln for ln in summarize_cuda.markdown([r]).splitlines() if r["file"] in ln)
    assert f"| {want:.2f}x |" in line
