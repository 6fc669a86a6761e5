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


# ------------------------------------------------------------------------------ 2: names
_DICT_FACTORY = """
from spattn.models import gqa_decoder_block


def build():
    model, (x, lengths) = gqa_decoder_block(
        seq_len=24, d_model=32, num_heads=4, num_kv_heads=2, window=8, batch=2
    )
    return model, {"key_lengths": lengths, "x": x}  # keywords, not in forward's order
"""


def _dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_export_names_inputs_outputs_and_axes_and_triton_uses_them(tmp_path):
    import onnx

    factory = tmp_path / "dict_factory.py"
    factory.write_text(_DICT_FACTORY)
    out = tmp_path / "named.onnx"
    data = invoke_json(
        "export",
        f"{factory}:build",
        "-o",
        out,
        "--input-names",
        "lengths,hidden_states",  # in the order of the example inputs
        "--output-names",
        "last_hidden_state",
    )
    assert data["validation"]["passed"]
    # the graph's inputs follow the example's order
    assert data["input_names"] == ["lengths", "hidden_states"]
    assert data["output_names"] == ["last_hidden_state"]
    g = onnx.load(str(out)).graph
    dims = {v.name: _dims(v) for v in [*g.input, *g.output]}
    assert dims == {
        "hidden_states": ["batch_size", "sequence_length", 32],
        "lengths": ["batch_size"],
        "last_hidden_state": ["batch_size", "sequence_length", 32],
    }
    repo = tmp_path / "repo"
    invoke("triton-repo", out, "-o", repo, "--kind", "cpu", "-q")
    config = (repo / "named" / "config.pbtxt").read_text()
    for name in ("hidden_states", "lengths", "last_hidden_state"):
        assert f'name: "{name}"' in config
    # verify maps the renamed inputs back onto forward's keywords
    v = invoke_json("verify", out, "--factory", f"{factory}:build")
    assert v["passed"] and v["reference"] == "pytorch"


def test_export_default_names_are_stable():
    import onnx

    g = onnx.load(str(encoder_model())).graph
    assert [i.name for i in g.input] == ["x"] and [o.name for o in g.output] == ["output"]
    assert _dims(g.input[0])[:2] == ["batch_size", "sequence_length"]


def test_export_name_options_bad_values(tmp_path):
    r = invoke("export", "longformer_encoder", "--input-names", "a,a", code=2)
    assert "distinct" in r.output
    r = invoke(
        "export", "longformer_encoder", "-o", tmp_path / "x.onnx", "--input-names", "a,b", code=1
    )
    assert "input_names: the model takes 1 tensor input(s) (x), got 2 names" in r.output


def test_python_export_keywords_names_and_axes(tmp_path):
    import onnx
    import pytest

    import spattn
    from spattn.models import gqa_decoder_block

    model, (x, lengths) = gqa_decoder_block(
        seq_len=16, d_model=32, num_heads=4, num_kv_heads=2, window=4, batch=2
    )
    rep = spattn.export(
        model,
        {"x": x, "key_lengths": lengths},
        tmp_path / "d.onnx",
        output_names=["y"],
        dynamic_axes={"x": {0: "batch", 1: "tokens"}, "key_lengths": {0: "batch"}},
    )
    assert rep.passed and rep.input_names == ["x", "key_lengths"] and rep.output_names == ["y"]
    g = onnx.load(str(tmp_path / "d.onnx")).graph
    assert _dims(g.input[0]) == ["batch", "tokens", 32] and _dims(g.output[0])[:2] == [
        "batch",
        "tokens",
    ]
    with pytest.raises(ValueError, match="'x' has rank 3, no axis 3"):
        spattn.export(model, (x, lengths), tmp_path / "e.onnx", dynamic_axes={"x": [0, 3]})
    with pytest.raises(ValueError, match="'hidden' is neither an input nor an output"):
        spattn.export(model, (x, lengths), tmp_path / "e.onnx", dynamic_axes={"hidden": [0]})
    with pytest.raises(ValueError, match="output_names: the model has 1 output"):
        spattn.export(model, (x, lengths), tmp_path / "f.onnx", output_names=["a", "b"])


# ------------------------------------------------------------------------------ 3: run
def _embedding_model(path, vocab=50):
    """input_ids [batch, seq] -> Gather over a [vocab, 8] table, and a key_lengths-like input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(vocab * 8, dtype=np.float32).reshape(vocab, 8), "t")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", 8])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["t", "input_ids"], ["emb"])], "g", [ids], [out], [table]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def test_run_generates_token_ids_inside_the_vocabulary(tmp_path):
    import numpy as np

    model = _embedding_model(tmp_path / "emb.onnx", vocab=50)
    inputs = tmp_path / "in.npz"
    data = invoke_json("run", model, "--seq-len", "300", "--repeat", "1", "--save-inputs", inputs)
    assert data["outputs"][0]["shape"] == [1, 300, 8] and data["outputs"][0]["finite"]
    ids = np.load(inputs)["input_ids"]
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 10


def test_run_seq_len_on_a_static_model_is_a_usage_error(tmp_path):
    from cli_helpers import plain_model

    r = invoke("run", plain_model(tmp_path / "relu.onnx"), "--seq-len", "64", code=2)
    assert "--seq-len" in r.output and "no dynamic sequence axis" in r.output
    r = invoke("run", plain_model(tmp_path / "relu.onnx"), "--batch", "4", code=2)
    assert "--batch" in r.output and "no dynamic batch axis" in r.output


def test_run_refuses_a_float64_npz_for_a_float32_model(tmp_path):
    import numpy as np

    enc = encoder_model()
    bad = tmp_path / "f64.npz"
    np.savez(bad, x=np.zeros((1, 32, 32), np.float64))
    r = invoke("run", enc, "--inputs", bad, code=1)
    assert "the model takes float32" in r.output and "float64" in r.output
    good = tmp_path / "f32.npz"
    np.savez(good, x=np.zeros((1, 32, 32), np.float32))
    assert invoke_json("run", enc, "--inputs", good, "--repeat", "1")["outputs"][0]["finite"]


# ------------------------------------------------------------------------------ 4: doctor, bench
def test_doctor_require_json_is_one_object(monkeypatch):
    from spattn import runners

    real = runners.backend_status
    monkeypatch.setattr(
        runners,
        "backend_status",
        lambda b: (False, "not here: how to get it") if b == "tensorrt" else real(b),
    )
    r = invoke("doctor", "--require", "tensorrt", "--json", code=1)
    data = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert data["ok"] is False and "tensorrt is not usable: not here" in data["error"]
    assert data["backends"]["tensorrt"]["how"] == "not here: how to get it"
    assert "error: tensorrt is not usable" in r.stderr


def test_tensorrt_missing_message_depends_on_the_plugin_library(monkeypatch):
    from spattn import runners, runtime

    monkeypatch.setattr(runtime, "library_path", lambda name="ort": "/opt/x/libspattn_trt.so")
    built = runners.tensorrt_missing()
    assert "rebuild" not in built and "/opt/x/libspattn_trt.so" in built
    assert "pip install tensorrt-cu13" in built

    def missing(name="ort"):
        raise FileNotFoundError(name)

    monkeypatch.setattr(runtime, "library_path", missing)
    assert "so that libspattn_trt.so is built" in runners.tensorrt_missing()


def test_bench_warns_when_threads_exceed_cores(tmp_path):
    from spattn.cli.bench import _cores

    args = ["bench", "-L", "32", "--heads", "1", "--head-dim", "8", "--repeat", "1"]
    args += ["--no-memory", "--device", "cpu", "-o", tmp_path, "--threads", _cores() + 1]
    r = invoke(*args)
    assert f"--threads {_cores() + 1} is more than the {_cores()} CPU core(s)" in r.stderr
    data = invoke_json(*args)
    assert any("CPU core(s)" in w for w in data["warnings"])


# ------------------------------------------------------------------------------ 5: pass rule
def test_export_and_verify_print_the_pass_rule():
    from cli_helpers import DECODER_PARAMS

    r = invoke(
        "export", "gqa_decoder_block", "-o", encoder_model().parent / "rule.onnx", *DECODER_PARAMS
    )
    assert "pass rule: |got - ref| <= 2e-05 + 0.0001 * |ref| for every element" in r.output
    assert "err/allowed" in r.output
    data = invoke_json("verify", encoder_model(), "--factory", "longformer_encoder")
    row = data["comparisons"][0]
    assert row["passed"] and 0 <= row["max_ratio"] <= 1


def test_compare_ratio_is_the_pass_rule():
    import numpy as np

    from spattn.compare import compare_outputs

    ref = np.array([0.0, 1e-7, 10.0])
    got = ref + np.array([1e-5, 1e-5, 5e-4])  # max rel error huge (near-zero ref), still passes
    row = compare_outputs({"y": ref}, {"y": got}, 2e-5, 1e-4)[0]
    assert row["passed"] and row["max_rel"] > 10 and row["max_ratio"] <= 1
    bad = compare_outputs({"y": ref}, {"y": ref + 3e-5}, 2e-5, 1e-4)[0]
    assert not bad["passed"] and bad["max_ratio"] > 1
