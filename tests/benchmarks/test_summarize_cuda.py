"""The committed GPU result files and the table made from them agree (runs on the CPU)."""

from __future__ import annotations

import glob
import json
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import summarize_cuda  # noqa: E402

FILES = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "cuda_L*_columns*.json")))


def test_result_files_exist():
    assert FILES, "no benchmarks/results/cuda_L*_columns*.json"


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
    with open(os.path.join(ROOT, "benchmarks", "results", "cuda_columns.md")) as f:
        committed = f.read()
    assert committed.endswith(table), "rerun: python3 benchmarks/summarize_cuda.py --md ..."


def test_table_ratio_is_flex_over_spattn():
    rows = summarize_cuda.load(FILES)
    r = next(r for r in rows if r["impl"].get("flex"))
    want = r["impl"]["flex"]["median_ms"] / r["impl"]["spattn"]["median_ms"]
    line = next(ln for ln in summarize_cuda.markdown([r]).splitlines() if r["file"] in ln)
    assert f"| {want:.2f}x |" in line
