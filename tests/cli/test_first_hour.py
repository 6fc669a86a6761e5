"""A new user's first hour (issue "A new user's first hour"): one test group per item."""

from __future__ import annotations

import json
import shutil

from cli_helpers import ENCODER_PARAMS, encoder_model, invoke, invoke_json


# ------------------------------------------------------------------------------ 1: verify
def test_verify_reuses_the_recorded_export_parameters():
    # The encoder was exported with non-default parameters (d_model=32, attention_window=8...);
    # verify --factory without -p rebuilds it with those, from encoder.report.json.
    enc = encoder_model()
    data = invoke_json("verify", enc, "--factory", "longformer_encoder")
    assert data["passed"] and data["reference"] == "pytorch"
    assert (
        data["factory_params"]["attention_window"] == 8 and data["factory_params"]["d_model"] == 32
    )
    assert any("factory parameters from" in n and "encoder.report.json" in n for n in data["notes"])
    assert any("node attributes match" in n for n in data["notes"])


def test_verify_names_the_attributes_that_differ_before_comparing_numbers():
    enc = encoder_model()
    r = invoke(
        "verify", enc, "--factory", "longformer_encoder", "-p", "attention_window=16", code=1
    )
    assert "does not match" in r.output and "window_left 4 (model) != 8 (factory)" in r.output
    assert "max abs err" not in r.output  # no numbers were compared


def test_verify_without_report_uses_given_parameters(tmp_path):
    enc = tmp_path / "copy.onnx"
    shutil.copy(encoder_model(), enc)  # no copy.report.json beside it
    data = invoke_json("verify", enc, "--factory", "longformer_encoder", *ENCODER_PARAMS)
    assert data["passed"] and not any("factory parameters from" in n for n in data["notes"])
    # The factory's defaults (d_model 64) cannot run this model: one clear line, not "a bug".
    r = invoke("verify", enc, "--factory", "longformer_encoder", code=1)
    assert "bug" not in r.output and r.output.count("\n") == 1


def test_verify_report_option(tmp_path):
    enc = tmp_path / "model.onnx"
    shutil.copy(encoder_model(), enc)
    rep = tmp_path / "elsewhere.json"
    shutil.copy(encoder_model().with_suffix(".report.json"), rep)
    data = invoke_json("verify", enc, "--factory", "longformer_encoder", "--report", rep)
    assert data["passed"] and data["factory_params"]["d_model"] == 32
    r = invoke(
        "verify", enc, "--factory", "longformer_encoder", "--report", tmp_path / "no.json", code=1
    )
    assert "no such file" in r.output
    rep.write_text(json.dumps({"other": 1}))
    r = invoke("verify", enc, "--factory", "longformer_encoder", "--report", rep, code=1)
    assert "is it a report of `spattn export`" in r.output
