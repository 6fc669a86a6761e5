"""spattn.compare.compare_outputs: the one pass rule of verify, export validation and TensorRT."""

from __future__ import annotations

import numpy as np

from spattn.compare import compare_outputs


def test_pass_rule_is_atol_plus_rtol_times_reference():
    ref = {"y": np.array([1.0, 100.0])}
    ok = compare_outputs(ref, {"y": np.array([1.0 + 1.9e-3, 100.0 + 0.1])}, 1e-3, 1e-3)
    assert ok[0]["passed"] and abs(ok[0]["max_abs"] - 0.1) < 1e-9
    bad = compare_outputs(ref, {"y": np.array([1.0 + 2.1e-3, 100.0])}, 1e-3, 1e-3)
    assert not bad[0]["passed"] and abs(bad[0]["max_abs"] - 2.1e-3) < 1e-9


def test_missing_misshapen_and_non_finite_outputs_fail():
    ref = {"a": np.zeros(3), "b": np.zeros(3), "c": np.zeros(3)}
    rows = compare_outputs(ref, {"b": np.zeros(4), "c": np.array([0.0, np.nan, 0.0])}, 1, 1)
    assert [r["passed"] for r in rows] == [False, False, False]
    assert rows[0]["note"] == "output missing"
    assert "shape [4] != reference [3]" in rows[1]["note"]
    assert rows[2]["note"] == "non-finite values"


def test_export_and_trt_use_the_one_comparison():
    import spattn.export as export_module
    import spattn.trt as trt_module

    assert export_module.compare_outputs is compare_outputs
    assert not hasattr(trt_module, "compare")
