"""`spattn` commands through click's CliRunner: results, artifacts, bad input, exit statuses."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
from cli_helpers import (
    DECODER_PARAMS,
    ENCODER_PARAMS,
    decoder_model,
    encoder_model,
    invoke,
    invoke_json,
    plain_model,
    sparse_model,
)

from spattn.runners import backend_status

COMMANDS = ["export", "inspect", "run", "build", "verify", "bench", "doctor", "triton-repo"]
CUDA_OK = backend_status("ort-cuda")[0]
TRT_OK = backend_status("tensorrt")[0]


@pytest.fixture
def encoder():
    return encoder_model()


@pytest.fixture
def decoder():
    return decoder_model()


# ------------------------------------------------------------------------------ help
def test_help_lists_every_command():
    out = invoke("--help").output
    for c in COMMANDS:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    out = invoke(command, "--help").output
    assert "Example" in out and f"spattn {command}" in out


def test_unknown_command_is_a_usage_error():
    assert "No such command" in invoke("frobnicate", code=2).output


# ------------------------------------------------------------------------------ export
def test_export_writes_model_and_report(encoder):
    assert encoder.is_file()
    report = json.loads(encoder.with_suffix(".report.json").read_text())
    assert report["num_spattn_nodes"] == 1
    assert report["validation"]["passed"] is True
    assert report["nodes"][0]["density"] > 0
    assert "window_left=4" in report["nodes"][0]["pattern"]
    assert report["dynamic_axes"] == ["batch", "sequence"]


def test_export_json_static_float16_no_validate(tmp_path):
    out = tmp_path / "enc16.onnx"
    data = invoke_json(
        "export",
        "longformer_encoder",
        "-o",
        out,
        *ENCODER_PARAMS,
        "--dtype",
        "float16",
        "--static-batch",
        "--static-seq",
        "--no-validate",
    )
    assert data["ok"] and data["dtype"] == "float16" and data["validation"] is None
    assert data["inputs"][0]["shape"] == [1, 32, 32] and data["inputs"][0]["dtype"] == "float16"
    assert out.is_file()


def test_export_failed_validation_exits_1(tmp_path):
    out = tmp_path / "strict.onnx"
    r = invoke(
        "export",
        "gqa_decoder_block",
        "-o",
        out,
        *DECODER_PARAMS,
        "--atol",
        "0",
        "--rtol",
        "0",
        code=1,
    )
    assert "FAILED" in r.output and out.is_file()
    assert json.loads(out.with_suffix(".report.json").read_text())["validation"]["passed"] is False


def test_export_unknown_sample_is_a_usage_error(tmp_path):
    r = invoke("export", "no_such_model", "-o", tmp_path / "x.onnx", code=2)
    assert "longformer_encoder" in r.output


def test_export_bad_and_unknown_params_are_usage_errors(tmp_path):
    assert "KEY=VALUE" in invoke("export", "longformer_encoder", "-p", "seq_len", code=2).output
    r = invoke("export", "longformer_encoder", "-p", "colour=3", code=2)
    assert "seq_len" in r.output


def test_export_missing_factory_module(tmp_path):
    r = invoke("export", "no_such_pkg.models:build", "-o", tmp_path / "x.onnx", code=1)
    assert r.output.count("\n") == 1
    assert "cannot import 'no_such_pkg.models'" in r.output
    assert "path/to/no_such_pkg/models.py:build" in r.output


def test_export_model_without_sparse_attention(tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text(
        textwrap.dedent("""
        import torch

        def build():
            return torch.nn.Linear(4, 4), (torch.randn(2, 3, 4),)
    """)
    )
    r = invoke("export", f"{factory}:build", "-o", tmp_path / "lin.onnx", code=1)
    assert "without any spattn::SparseAttention node" in r.output


def test_export_factory_returning_garbage(tmp_path):
    factory = tmp_path / "bad_factory.py"
    factory.write_text("def build():\n    return 42\n")
    r = invoke("export", f"{factory}:build", code=1)
    assert "must return (torch.nn.Module, example_inputs)" in r.output


# ------------------------------------------------------------------------------ inspect
def test_inspect_lists_nodes_and_plots(encoder, tmp_path):
    png = tmp_path / "mask.png"
    r = invoke("inspect", encoder, "--length", "64", "--plot", png, "-q")
    assert "node_sparse_attention" in r.output and "density (L=64)" in r.output
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_json_and_block_layout_plot(decoder, tmp_path):
    png = tmp_path / "layout.png"
    data = invoke_json(
        "inspect", decoder, "-L", "2048", "--plot", png, "--node", "node_sparse_attention"
    )
    node = data["nodes"][0]
    assert node["attributes"]["causal"] == 1 and node["key_lengths"] is True
    assert 0 < node["density"] < 0.01
    assert png.stat().st_size > 1000


def test_inspect_labels_and_plots_a_longformer_with_per_input_global_tokens(tmp_path):
    import torch

    import spattn
    from spattn import Pattern, sparse_attention

    class Longformerish(torch.nn.Module):
        """Longformer's two calls (as spattn.hf exports them): a band and global attention,
        both with the per-input global_mask."""

        def forward(self, x: torch.Tensor, global_attention_mask: torch.Tensor) -> torch.Tensor:
            band = sparse_attention(
                x, x, x, Pattern(window_left=4, window_right=4), global_mask=global_attention_mask
            )
            glob = sparse_attention(x, x, x, Pattern(), global_mask=global_attention_mask)
            return band + glob

    x = torch.randn(1, 2, 32, 8)
    gm = torch.zeros(1, 32, dtype=torch.int32)
    gm[0, 3] = 1
    path = tmp_path / "lf.onnx"
    assert spattn.export(Longformerish(), (x, gm), path, progress=False).passed
    png = tmp_path / "lf.png"
    data = invoke_json(
        "inspect", path, "-L", "32", "--plot", png, "--node", "1", "--global-tokens", "0,9"
    )
    band, glob = data["nodes"]
    label = "Longformer: sliding window ±4 + per-input global tokens (global_mask)"
    assert band["pattern"] == label + " (window_left=4 window_right=4)"
    assert glob["pattern"].startswith("global tokens only")
    assert "custom" not in band["pattern"] + glob["pattern"]
    assert glob["density"] == 0.0  # no token marked: the band is off, nothing is allowed
    assert 0 < band["density"] < 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = invoke("inspect", path, "-L", "32", "--plot", png, "--global-tokens", "40", code=2)
    assert "--global-tokens" in r.output and "[0, 32)" in r.output
    r = invoke("inspect", path, "-L", "32", "--plot", png, "--key-length", "8", code=2)
    assert "--key-length" in r.output and "no key_lengths input" in r.output


def test_inspect_bad_inputs(tmp_path, encoder):
    assert "no such file" in invoke("inspect", tmp_path / "missing.onnx", code=1).output
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model")
    assert "not an ONNX model" in invoke("inspect", junk, code=1).output
    r = invoke("inspect", plain_model(tmp_path / "relu.onnx"), code=1)
    assert "no spattn::SparseAttention node" in r.output
    r = invoke("inspect", encoder, "--plot", tmp_path / "x.png", "--node", "7", code=2)
    assert "--node" in r.output


@pytest.mark.parametrize(
    "attrs, names",
    [
        ({"window_left": -5}, "window_left: expected -1 or >= 0, got -5"),
        ({"causal": 2}, "causal: expected 0 or 1"),
        ({"block_size": 0}, "block_size"),
        ({"colour": 1}, "unknown attribute 'colour'"),
        ({"window_left": 2.5}, "window_left: expected an attribute of type INT"),
    ],
)
def test_invalid_attributes_are_named(tmp_path, attrs, names):
    model = sparse_model(tmp_path / "bad.onnx", **attrs)
    for command in ("inspect", "run"):
        r = invoke(command, model, code=1)
        assert names in r.output and "attn0" in r.output


def test_debug_shows_the_exception(tmp_path):
    r = invoke("inspect", tmp_path / "missing.onnx", "--debug", code=1)
    assert type(r.exception).__name__ == "UserError"


# ------------------------------------------------------------------------------ run
def test_run_generated_inputs_saves_outputs(encoder, tmp_path):
    out, ins = tmp_path / "out.npz", tmp_path / "in.npz"
    data = invoke_json(
        "run",
        encoder,
        "--batch",
        "2",
        "--seq-len",
        "48",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "-o",
        out,
        "--save-inputs",
        ins,
    )
    assert data["timing"]["repeat"] == 3 and data["timing"]["median_ms"] > 0
    assert data["outputs"][0]["shape"] == [2, 48, 32] and data["outputs"][0]["finite"]
    first = np.load(out)
    again = tmp_path / "again.npz"
    invoke("run", encoder, "--inputs", ins, "-o", again, "--repeat", "1", "-q")
    second = np.load(again)
    for k in first.files:
        np.testing.assert_array_equal(first[k], second[k])


def test_run_decoder_with_key_lengths(decoder, tmp_path):
    data = invoke_json(
        "run", decoder, "--shape", "x=3,20,32", "--repeat", "1", "-o", tmp_path / "o.npz"
    )
    assert data["inputs"] == {"x": [3, 20, 32], "key_lengths": [3]}


def test_run_mismatched_inputs(encoder, tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((1, 16, 64), np.float32))
    r = invoke("run", encoder, "--inputs", wrong, code=1)
    assert "dim 2 must be 32" in r.output and "input 'x'" in r.output
    np.savez(wrong, y=np.zeros((1, 16, 32), np.float32))
    assert "lack input(s) 'x'" in invoke("run", encoder, "--inputs", wrong, code=1).output
    np.savez(wrong, x=np.zeros((16, 32), np.float32))
    assert "rank 2 instead of 3" in invoke("run", encoder, "--inputs", wrong, code=1).output
    assert (
        "no such file" in invoke("run", encoder, "--inputs", tmp_path / "none.npz", code=1).output
    )
    assert "expected NAME=D0" in invoke("run", encoder, "--shape", "x=a,b", code=2).output
    assert "has no input 'z'" in invoke("run", encoder, "--shape", "z=1,2,3", code=2).output
    assert "dim 2 must be 32" in invoke("run", encoder, "--shape", "x=1,8,16", code=1).output


def test_run_shared_dims_must_agree(tmp_path):
    model = sparse_model(tmp_path / "sw.onnx", window_left=2, window_right=2)
    bad = tmp_path / "bad.npz"
    qkv = {n: np.zeros((2, 2, 8, 8), np.float32) for n in ("query", "key", "value")}
    qkv["key"] = np.zeros((3, 2, 8, 8), np.float32)
    np.savez(bad, **qkv)
    r = invoke("run", model, "--inputs", bad, code=1)
    assert "dim 0 (batch) is 3 but input 'query' has batch = 2" in r.output
    assert "dims with one name must agree" in r.output


def test_run_model_without_spattn_nodes(tmp_path):
    # a plain model (a dense baseline) runs and is timed like ours, with a note
    data = invoke_json("run", plain_model(tmp_path / "relu.onnx"), "--repeat", "2")
    assert data["outputs"][0]["shape"] == [1, 4] and data["timing"]["median_ms"] > 0
    assert "no spattn::SparseAttention node" in data["notes"][0]


@pytest.mark.skipif(CUDA_OK, reason="ONNX Runtime CUDA is usable here")
def test_run_cuda_backend_missing(encoder):
    r = invoke("run", encoder, "--backend", "ort-cuda", code=1)
    assert r.stderr.startswith("error: ") and "onnxruntime-gpu" in r.stderr


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here")
def test_run_tensorrt_backend_missing(encoder):
    r = invoke("run", encoder, "--backend", "tensorrt", "--engine", "x.plan", code=1)
    assert "TensorRT is not installed" in r.output and "pip install tensorrt" in r.output


# ------------------------------------------------------------------------------ build
@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here")
def test_build_without_tensorrt(encoder):
    r = invoke("build", encoder, code=1)
    assert r.output.count("\n") == 1 and "TensorRT is not installed" in r.output


def test_build_bad_input(encoder, tmp_path):
    assert "no such file" in invoke("build", tmp_path / "none.onnx", code=1).output
    assert "MIN,OPT,MAX" in invoke("build", encoder, "--batch", "4,2,8", code=2).output
    assert "--weakly-typed" in invoke("build", encoder, "--fp16", code=2).output
    r = invoke("build", plain_model(tmp_path / "relu.onnx"), code=1)
    assert "no spattn::SparseAttention node" in r.output


# ------------------------------------------------------------------------------ verify
def test_verify_against_pytorch(encoder):
    data = invoke_json("verify", encoder, "--factory", "longformer_encoder", *ENCODER_PARAMS)
    assert data["reference"] == "pytorch" and data["passed"]
    assert {c["backend"] for c in data["comparisons"]} >= {"ort-cpu"}
    row = next(c for c in data["comparisons"] if c["backend"] == "ort-cpu")
    assert row["passed"] and row["max_abs"] < 1e-4


def test_verify_text_table_generated_inputs(decoder):
    r = invoke(
        "verify",
        decoder,
        "--factory",
        "gqa_decoder_block",
        *DECODER_PARAMS,
        "--seq-len",
        "16",
        "--batch",
        "3",
    )
    assert "max abs err" in r.output and "PASSED" in r.output and "[3, 16, 32]" in r.output


def test_verify_failure_exits_1(encoder):
    r = invoke(
        "verify",
        encoder,
        "--factory",
        "longformer_encoder",
        *ENCODER_PARAMS,
        "--atol",
        "0",
        "--rtol",
        "0",
        code=1,
    )
    assert "FAILED" in r.output


def test_verify_bad_input(encoder):
    if not (CUDA_OK or TRT_OK):
        r = invoke("verify", encoder, code=1)
        assert "nothing to compare" in r.output and "--factory" in r.output
    assert "choose from" in invoke("verify", encoder, "--backends", "ort-cpu,foo", code=2).output
    assert "--factory" in invoke("verify", encoder, "--backends", "pytorch", code=2).output


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here")
def test_verify_requested_backend_not_installed(encoder):
    r = invoke("verify", encoder, "--backends", "ort-cpu,tensorrt", code=1)
    assert "backend tensorrt is not usable here: TensorRT is not installed" in r.output


# ------------------------------------------------------------------------------ bench
def test_bench_table_json_and_plot(tmp_path):
    data = invoke_json(
        "bench",
        "-L",
        "64,128",
        "--heads",
        "2",
        "--head-dim",
        "16",
        "-a",
        "window_left=8",
        "-a",
        "window_right=8",
        "-a",
        "num_global=2",
        "--repeat",
        "2",
        "--device",
        "cpu",
        "-o",
        tmp_path,
    )
    assert data["backends"] == ["spattn-ort-cpu", "dense-ort-cpu"]
    assert [r["length"] for r in data["rows"]] == [64, 128]
    for row in data["rows"]:
        assert all(t > 0 for t in row["times_ms"].values())
        assert all(m is not None for m in row["memory_bytes"].values())
    png = tmp_path / "bench.png"
    assert png.stat().st_size > 1000 and json.loads((tmp_path / "bench.json").read_text())


def test_bench_text_without_memory(tmp_path):
    r = invoke(
        "bench",
        "-L",
        "32",
        "--heads",
        "1",
        "--head-dim",
        "8",
        "--repeat",
        "1",
        "--no-memory",
        "--device",
        "cpu",
        "-o",
        tmp_path,
        "-q",
    )
    assert "spattn-ort-cpu ms" in r.output and "speedup" in r.output


def test_bench_bad_input(tmp_path):
    assert "--attr" in invoke("bench", "-a", "colour=1", code=2).output
    assert "window_left" in invoke("bench", "-a", "window_left=-3", code=2).output
    assert "--lengths" in invoke("bench", "-L", "a,b", code=2).output
    assert "--kv-heads" in invoke("bench", "--heads", "3", "--kv-heads", "2", code=2).output
    if not CUDA_OK:
        assert "--device cuda" in invoke("bench", "--device", "cuda", "-o", tmp_path, code=1).output


# ------------------------------------------------------------------------------ doctor
def test_doctor_text_and_json():
    r = invoke("doctor")
    for word in ("torch", "onnxruntime", "TensorRT", "libspattn_ort.so", "backends:", "ort-cpu"):
        assert word in r.output
    data = invoke_json("doctor")
    assert data["backends"]["ort-cpu"]["usable"]
    for b in data["backends"].values():
        assert b["usable"] or b["how"]


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here")
def test_doctor_require_missing_backend():
    r = invoke("doctor", "--require", "tensorrt", "-q", code=1)
    assert "tensorrt is not usable" in r.stderr


def test_sparse_model_helper_is_valid(tmp_path):
    onnx.checker.check_model(onnx.load(str(sparse_model(tmp_path / "ok.onnx", window_left=2))))


# ------------------------------------------------------------------------------ TensorRT paths
class FakeTensorRT:
    """Stands in for spattn.trt: records build_engine calls; run_engine runs ONNX Runtime on
    the model whose path the fake engine file holds."""

    def __init__(self):
        self.builds = []

    def build_engine(self, onnx_path, engine_path, **kwargs):
        self.builds.append(kwargs)
        with open(engine_path, "w") as f:
            f.write(str(onnx_path))
        return str(engine_path)

    def run_engine(self, engine_path, feeds):
        from spattn.modelio import input_specs, load_onnx
        from spattn.runners import OrtRunner

        with open(engine_path) as f:
            onnx_path = f.read()
        return OrtRunner(onnx_path, input_specs(load_onnx(onnx_path)))(feeds)


@pytest.fixture
def fake_trt(monkeypatch):
    from spattn import runners

    fake = FakeTensorRT()
    monkeypatch.setattr(runners, "tensorrt_status", lambda: (True, "fake TensorRT"))
    monkeypatch.setattr(runners, "tensorrt_module", lambda: fake)
    return fake


def test_build_run_verify_through_the_tensorrt_api(decoder, tmp_path, fake_trt):
    plan = tmp_path / "decoder.plan"
    data = invoke_json(
        "build",
        decoder,
        "-o",
        plan,
        "--batch",
        "1,2,4",
        "--seq-len",
        "8,16,64",
        "--max-shapes",
        "x=4,128,32",
    )
    kw = fake_trt.builds[0]
    assert kw["min_shapes"] == {"x": (1, 8, 32), "key_lengths": (1,)}
    assert kw["opt_shapes"] == {"x": (2, 16, 32), "key_lengths": (2,)}
    assert kw["max_shapes"] == {"x": (4, 128, 32), "key_lengths": (4,)}
    assert kw["strongly_typed"] and kw["progress"] is False and data["engine"] == str(plan)
    r = invoke_json(
        "run",
        decoder,
        "--backend",
        "tensorrt",
        "--engine",
        plan,
        "--repeat",
        "1",
        "--batch",
        "2",
        "--seq-len",
        "16",
        "-o",
        tmp_path / "trt.npz",
    )
    assert r["outputs"][0]["shape"] == [2, 16, 32]
    v = invoke_json("verify", decoder, "--backends", "ort-cpu,tensorrt", "--engine", plan)
    assert v["passed"] and [c["backend"] for c in v["comparisons"]] == ["tensorrt"]
    v = invoke_json("verify", decoder, "--backends", "ort-cpu,tensorrt")  # temporary engine
    assert v["passed"] and len(fake_trt.builds) == 2


def test_export_bfloat16_notes_missing_cpu_kernels(tmp_path):
    data = invoke_json(
        "export",
        "gqa_decoder_block",
        "-o",
        tmp_path / "bf16.onnx",
        *DECODER_PARAMS,
        "--dtype",
        "bfloat16",
    )
    assert data["ok"] and data["validation"] is None and data["dtype"] == "bfloat16"
    assert "bfloat16 kernels" in data["notes"][0]
    r = invoke("run", tmp_path / "bf16.onnx", code=1)
    assert "--backend ort-cuda" in r.output
