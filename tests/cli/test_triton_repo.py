"""`spattn triton-repo`: the generated repositories, their configs parsed back, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import decoder_model, encoder_model, invoke, invoke_json

from spattn import triton
from spattn.errors import UserError
from spattn.runners import backend_status

TRT_OK = backend_status("tensorrt")[0]
HAVE_TRITONCLIENT = triton._triton_schema() is not None


@pytest.fixture(params=["triton", "subset"])
def schema(request, monkeypatch):
    """Run a test against Triton's own schema (when tritonclient is installed) and the subset."""
    if request.param == "triton" and not HAVE_TRITONCLIENT:
        pytest.skip("tritonclient is not installed (pip install --no-deps tritonclient)")
    monkeypatch.setattr(triton, "_SCHEMA", None)
    if request.param == "subset":
        monkeypatch.setattr(triton, "_triton_schema", lambda: None)
    yield request.param
    triton._SCHEMA = None


def test_onnxruntime_repository(tmp_path, schema):
    repo = tmp_path / "repo"
    data = invoke_json(
        "triton-repo",
        encoder_model(),
        "-o",
        repo,
        "--name",
        "encoder",
        "--max-batch-size",
        "16",
        "--preferred-batch-size",
        "4",
        "--preferred-batch-size",
        "8",
        "--server-path",
        "/models",
    )
    assert ("Triton's model_config.proto" in data["schema"]) == (schema == "triton")
    folder = repo / "encoder"
    assert (folder / "1" / "model.onnx").stat().st_size > 0
    assert (folder / "libspattn_ort.so").stat().st_size > 0
    config, _ = triton.parse_config((folder / "config.pbtxt").read_text())
    assert config.name == "encoder" and config.backend == "onnxruntime"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert list(config.model_operations.op_library_filename) == ["/models/encoder/libspattn_ort.so"]
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [-1, 32])]
    assert config.input[0].data_type == 11  # TYPE_FP32
    assert config.instance_group[0].kind == 1  # KIND_GPU
    assert data["command"] == "tritonserver --model-repository=/models"


def test_batch_only_input_is_reshaped(tmp_path, schema):
    repo = tmp_path / "repo"
    invoke("triton-repo", decoder_model(), "-o", repo, "--kind", "cpu", "-q")
    config, _ = triton.parse_config((repo / "decoder" / "config.pbtxt").read_text())
    kl = next(i for i in config.input if i.name == "key_lengths")
    assert list(kl.dims) == [1] and kl.HasField("reshape") and list(kl.reshape.shape) == []
    assert kl.data_type == 8  # TYPE_INT32
    assert config.instance_group[0].kind == 2  # KIND_CPU
    lib = config.model_operations.op_library_filename[0]
    assert lib == str((repo / "decoder" / "libspattn_ort.so").resolve())


def test_static_batch_turns_batching_off(tmp_path):
    static = tmp_path / "static.onnx"
    invoke(
        "export",
        "longformer_encoder",
        "-o",
        static,
        "-p",
        "seq_len=16",
        "-p",
        "d_model=16",
        "-p",
        "nhead=2",
        "-p",
        "num_layers=1",
        "-p",
        "batch=1",
        "--static-batch",
        "--no-validate",
        "-q",
    )
    data = invoke_json("triton-repo", static, "-o", tmp_path / "repo")
    assert data["models"][0]["max_batch_size"] == 0
    assert "batching off" in data["notes"][0]
    config, _ = triton.parse_config((tmp_path / "repo" / "static" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, -1, 16]


def test_tensorrt_model_with_given_engine_and_plugin(tmp_path, monkeypatch, schema):
    libdir = tmp_path / "libs"
    libdir.mkdir()
    (libdir / "libspattn_trt.so").write_bytes(b"\x7fELF plugin stand-in")
    engine = tmp_path / "encoder.plan"
    engine.write_bytes(b"engine stand-in")
    from spattn.runtime import library_path

    ort_dir = str(Path(library_path("ort")).parent)
    monkeypatch.setenv("SPATTN_LIB_DIR", f"{ort_dir}:{libdir}")
    repo = tmp_path / "repo"
    data = invoke_json(
        "triton-repo",
        encoder_model(),
        "-o",
        repo,
        "--backend",
        "both",
        "--engine",
        engine,
        "--name",
        "enc",
        "--server-path",
        "/models",
    )
    assert [m["name"] for m in data["models"]] == ["enc", "enc_trt"]
    trt_dir = repo / "enc_trt"
    assert (trt_dir / "1" / "model.plan").read_bytes() == b"engine stand-in"
    assert (trt_dir / "libspattn_trt.so").is_file()
    config, _ = triton.parse_config((trt_dir / "config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert not config.HasField("model_operations")
    assert 'plugins="/models/enc_trt/libspattn_trt.so"' in data["command"]


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here")
def test_tensorrt_without_tensorrt_or_engine(tmp_path):
    r = invoke(
        "triton-repo", encoder_model(), "-o", tmp_path / "r", "--backend", "tensorrt", code=1
    )
    assert "TensorRT is not installed" in r.output and "--engine" in r.output


def test_bad_input(tmp_path):
    repo = tmp_path / "repo"
    invoke("triton-repo", encoder_model(), "-o", repo, "-q")
    r = invoke("triton-repo", encoder_model(), "-o", repo, code=1)
    assert "already exists; pass --force" in r.output
    invoke("triton-repo", encoder_model(), "-o", repo, "--force", "-q")
    assert "--name" in invoke("triton-repo", encoder_model(), "--name", "a/b", code=2).output
    assert "no such file" in invoke("triton-repo", tmp_path / "none.onnx", code=1).output
    r = invoke(
        "triton-repo",
        encoder_model(),
        "-o",
        tmp_path / "r2",
        "--engine",
        tmp_path / "none.plan",
        "--backend",
        "tensorrt",
        code=1,
    )
    assert "none.plan" in r.output


@pytest.mark.parametrize(
    "text, message",
    [
        ('name: "m" backend: "onnxruntime" colour: 3', "colour"),
        ('name: "m" backend: "onnxruntime" max_batch_size: "eight"', "max_batch_size"),
        (
            'name: "m" backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 } ] '
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            "dims must not be empty",
        ),
        (
            'name: "m" max_batch_size: 0 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            "neither backend nor platform",
        ),
        (
            'name: "m" backend: "onnxruntime" max_batch_size: 0 dynamic_batching { } '
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            "needs max_batch_size > 0",
        ),
    ],
)
def test_parse_config_rejects(text, message, schema):
    with pytest.raises(UserError, match=message):
        triton.parse_config(text)


@pytest.mark.skipif(not HAVE_TRITONCLIENT, reason="tritonclient is not installed")
def test_subset_schema_matches_triton():
    """Every field of triton_model_config.proto has Triton's name, number and type."""
    from google.protobuf import descriptor_pool

    ours = triton._parse_proto(triton.SUBSET_PROTO.read_text())
    theirs = triton._triton_schema().DESCRIPTOR.file
    pool = descriptor_pool.DescriptorPool()
    pool.Add(ours)
    nested = {"Kind": "ModelInstanceGroup.Kind"}
    for msg in ours.message_type:
        t = theirs.message_types_by_name[msg.name]
        for f in msg.field:
            tf = t.fields_by_name[f.name]
            assert (tf.number, tf.type, tf.is_repeated) == (f.number, f.type, f.label == 3), (
                msg.name,
                f.name,
            )
            if f.type in (11, 14):
                want = f.type_name.split(".")[-1]
                got = tf.message_type.name if f.type == 11 else tf.enum_type.full_name
                assert got.endswith(nested.get(want, want)), (msg.name, f.name)
    for enum in ours.enum_type:
        t = (
            theirs.enum_types_by_name.get(enum.name)
            or theirs.message_types_by_name["ModelInstanceGroup"].enum_types_by_name[enum.name]
        )
        assert {v.name: v.number for v in enum.value}.items() <= {
            v.name: v.number for v in t.values
        }.items()
