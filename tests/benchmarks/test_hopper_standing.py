"""benchmarks/hopper_standing.py: the latest run that measured a row beside its anchors wins, a run
without anchors never replaces it, and the committed standing is the one its inputs give."""

from __future__ import annotations

import glob
import importlib.util
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _load():
    path = os.path.join(ROOT, "benchmarks", "hopper_standing.py")
    spec = importlib.util.spec_from_file_location("hopper_standing", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _prefill(key, d, ms, ratio, met):
    row = {
        "kind": "prefill",
        "key": key,
        "pattern": key,
        "L": 16384,
        "D": d,
        "dtype": "bfloat16",
        "id": f"prefill:{key}:L16384:D{d}:bfloat16",
        "impl": {"spattn": {"median_ms": ms, "tflops": 100.0}},
    }
    if ratio is not None:
        row["target"] = {
            "text": ">= 1.0x FA4",
            "min_ratio": 1.0,
            "ratio": ratio,
            "met": met,
            "best_anchor": "fa4",
            "best_ms": ms * ratio,
        }
    return row


def _decode(ratio):
    return {
        "kind": "decode",
        "key": "decode_window4096",
        "pattern": "causal window 4096",
        "batch": 16,
        "Lq": 1,
        "cache": 32768,
        "D": 128,
        "dtype": "bfloat16",
        "heads_q": 32,
        "heads_kv": 8,
        "id": "decode:decode_window4096:cache32768:lq1",
        "impl": {"spattn": {"median_ms": 0.07}, "fa4": {"median_ms": 0.07 * ratio}},
        "bandwidth": {"fraction": 0.8, "met": True},
        "ratio_vs_fa4": ratio,
    }


def _write(tmp_path, name, date, rows):
    path = tmp_path / name
    path.write_text(json.dumps({"meta": {"date": date, "device": "GPU"}, "rows": rows}))
    return str(path)


def test_latest_measured_row_wins(tmp_path):
    mod = _load()
    old = _write(
        tmp_path,
        "old.json",
        "2026-12-01 10:00:00",
        [_prefill("dense", 64, 2.0, 0.5, False), _prefill("sliding256", 64, 1.0, 1.2, True)],
    )
    new = _write(
        tmp_path,
        "new.json",
        "2026-12-02 10:00:00",
        [
            _prefill("dense", 64, 1.5, 0.7, False),
            # anchors skipped in this run: no ratio, so the older measured row stays
            _prefill("sliding256", 64, 0.9, None, None),
            _decode(0.9),
        ],
    )
    best = mod.latest_rows([new, old])  # the order of the files does not matter, the dates do
    assert best["prefill:dense:L16384:D64:bfloat16"]["file"] == "new.json"
    assert best["prefill:dense:L16384:D64:bfloat16"]["row"]["target"]["ratio"] == 0.7
    assert best["prefill:sliding256:L16384:D64:bfloat16"]["file"] == "old.json"
    text, summary = mod.markdown(best, [old, new])
    by_pattern = {s["pattern"]: s for s in summary["prefill"]}
    assert by_pattern["dense"]["met"] == 0 and by_pattern["dense"]["ratio_max"] == 0.7
    assert by_pattern["sliding256"]["met"] == 1
    assert summary["decode"][0]["ratio_vs_fa4"] == 0.9
    assert "| decode | >= 1.0x FA4 | 0 of 1 | 0.90x |" in text
    assert "`new.json` (2026-12-02)" in text and "`old.json` (2026-12-01)" in text


def test_committed_standing_is_current():
    # The committed table is what the committed runs give: adding a bench_hopper.py result
    # without regenerating it fails here.
    mod = _load()
    paths = sorted(
        p
        for p in glob.glob(os.path.join(RESULTS, "hopper_h200_*.json"))
        if not p.endswith("_standing.json")
    )
    text, _ = mod.markdown(mod.latest_rows(paths), paths)
    with open(os.path.join(RESULTS, "hopper_h200_standing.md")) as f:
        assert f.read() == text, "regenerate: python3 benchmarks/hopper_standing.py --md ..."
