"""scripts/hf_family_sweep.py: one family that exports and one whose error must say why."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hf_family_sweep.py"


@pytest.mark.skipif(
    os.environ.get("SPATTN_HF_FULL") != "1", reason="set SPATTN_HF_FULL=1 (two exports)"
)
def test_sweep_reports_each_family(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("hf_family_sweep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "sweep.json"
    assert mod.main(["--only", "gpt2", "bloom", "--out", str(out)]) == 0
    rows = {r["family"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["gpt2"]["outcome"] == "passed" and rows["gpt2"]["max_logits_error"] < 1e-4
    assert rows["bloom"]["outcome"] == "error" and "ALiBi" in rows["bloom"]["message"]
    assert all(r["as_expected"] for r in rows.values())
