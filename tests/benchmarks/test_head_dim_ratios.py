"""benchmarks/head_dim_ratios.py on synthetic bench_hopper.py results: the ratio is taken inside
each run, and a row is met (every run), met on the mean only, or not met."""

from __future__ import annotations

import importlib.util
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _load():
    path = os.path.join(ROOT, "benchmarks", "head_dim_ratios.py")
    spec = importlib.util.spec_from_file_location("head_dim_ratios", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, name, tf):
    rows = [
        {
            "kind": "prefill",
            "key": pat,
            "L": 16384,
            "D": d,
            "dtype": "bfloat16",
            "impl": {"spattn": {"tflops": v}},
        }
        for (pat, d), v in tf.items()
    ]
    rows.append({"kind": "decode", "key": "dense", "L": 16384, "D": 96, "dtype": "bfloat16"})
    path = tmp_path / name
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_ratios_per_run_and_verdicts(tmp_path):
    mod = _load()
    # D = 128 moves between the runs; each ratio uses its own run's D = 128.
    a = _run(
        tmp_path,
        "a.json",
        {
            ("p", 128): 500.0,
            ("p", 96): 420.0,
            ("q", 128): 100.0,
            ("q", 96): 70.0,
            ("r", 128): 200.0,
            ("r", 96): 150.0,
        },
    )
    b = _run(
        tmp_path,
        "b.json",
        {
            ("p", 128): 400.0,
            ("p", 96): 340.0,
            ("q", 128): 100.0,
            ("q", 96): 95.0,
            ("r", 128): 200.0,
            ("r", 96): 170.0,
        },
    )
    md = mod.table([a, b], 0.8)
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()[2:]}
    assert set(lines) == {"p", "q", "r"}  # D = 128 and the decode row make no line
    # p: 0.84 and 0.85, met in both runs
    assert "| 0.840 | 0.850 | 0.840 | 0.845 | met |" in lines["p"]
    # q: 0.70 and 0.95: the mean (0.825) reaches the target, one run does not
    assert "| 0.700 | 0.950 | 0.700 | 0.825 | mean |" in lines["q"]
    # r: 0.75 and 0.85, mean 0.80: met on the mean
    assert lines["r"].endswith("| 0.750 | 0.800 | mean |")
    md_strict = mod.table([a, b], 0.83)
    assert "**not met**" in md_strict.splitlines()[4]  # r: mean 0.80 < 0.83


def test_a_run_without_the_head_dim_shows_a_dash(tmp_path):
    mod = _load()
    a = _run(tmp_path, "a.json", {("p", 128): 500.0, ("p", 256): 600.0})
    b = _run(tmp_path, "b.json", {("p", 128): 500.0})
    line = mod.table([a, b], 0.8).splitlines()[2]
    assert "| 1.200 | - | 1.200 | 1.200 | met |" in line
