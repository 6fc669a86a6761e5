"""benchmarks/pairs_choice.py without a GPU: which forms each head dim times, the band plan, the
ratios and the table it writes (the timing itself needs CUDA and runs on the GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _load():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    path = os.path.join(ROOT, "benchmarks", "pairs_choice.py")
    spec = importlib.util.spec_from_file_location("pairs_choice", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pc = _load()


def test_forms_per_head_dim():
    # Two consumers with pairs differ from pairs only at tile width 64 (head dims up to 64).
    assert pc.forms_for(64) == ["one tile", "pairs", "pairs, 2 consumers", "default"]
    assert pc.forms_for(32) == pc.forms_for(64)
    assert pc.forms_for(128) == ["one tile", "pairs", "default"]
    assert pc.FORMS["one tile"] == {"SPATTN_WS_PAIRS": "0"}
    assert pc.FORMS["pairs, 2 consumers"] == {"SPATTN_WS_PAIRS": "1", "SPATTN_WS_PARTS": "2"}
    assert pc.FORMS["default"] == {}


def test_band_plan_is_short_rows():
    cases = pc.band_cases([64, 128])
    assert len(cases) == 8
    for name, b, hq, hkv, lq, lk, d, attrs in cases:
        assert d in (64, 128) and lq == lk and b == 1 and hq == hkv == 16
        # narrow_rows: a band of at most 1,024 keys (or a causal window of 1,024)
        left, right = attrs.get("window_left", -1), attrs.get("window_right", 0)
        assert 0 <= left + right + 1 <= 1024, name
    assert {c[0] for c in cases} == {
        "prefill ±256 16K",
        "prefill ±256 64K",
        "prefill ±256 + 64 global 16K",
        "prefill causal window 1024 16K",
    }
    # the long-row plan is unchanged by the band plan
    assert all(
        c[0].startswith(("decode", "prefill causal 16K", "prefill strided")) for c in pc.cases([96])
    )


def test_row_ratios_and_table(tmp_path):
    case = ("prefill ±256 16K", 1, 16, 16, 16384, 16384, 64, {"window_left": 256})
    times = {
        "one tile": [1.0, 1.2],
        "pairs": [0.9, 0.9],
        "pairs, 2 consumers": [1.21, 1.21],
        "default": [1.1, 1.1],
    }
    diffs = {"one tile": 0.0, "pairs": 0.002, "pairs, 2 consumers": 0.001, "default": 0.0}
    row = pc.make_row(case, times, diffs)
    assert row["over_one_tile"]["one tile"] == 1.0
    assert row["over_one_tile"]["pairs"] == pytest.approx(0.9 / 1.1)
    assert row["over_one_tile"]["pairs, 2 consumers"] == pytest.approx(1.1)
    row128 = pc.make_row(
        case[:6] + (128,) + case[7:],
        {"one tile": [2.0], "pairs": [3.0], "default": [2.0]},
        {"one tile": 0.0, "pairs": 0.0, "default": 0.0},
    )
    meta = {"device": "H200", "library_sha256": "ab" * 32, "command": "python3 x"}
    base = str(tmp_path / "pairs_choice_t")
    pc.write(base, meta, [row, row128])
    with open(base + ".json") as f:
        data = json.load(f)
    assert data["device"] == "H200" and len(data["rows"]) == 2
    text = open(base + ".txt").read()
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| case | D | one tile ms | pairs / one tile |")
    assert "| prefill ±256 16K | 64 | 1.100 | 0.818 | 1.100 | 1.000 | 0.002 |" in lines
    # a form that is not timed at a head dim leaves its cell blank
    assert "| prefill ±256 16K | 128 | 2.000 | 1.500 |  | 1.000 | 0 |" in lines
