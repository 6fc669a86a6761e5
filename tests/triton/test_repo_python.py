"""`spattn triton-repo --backend python`: the files, the config parsed back with Triton's schema
(and spattn's subset of it), the model's real names and dims, instances and batching."""

from __future__ import annotations

import json

import pytest
from triton_helpers import cli_run

from spattn import triton


@pytest.fixture(params=["triton", "subset"])
def schema(request, monkeypatch):
    if request.param == "triton" and triton._triton_schema() is None:
        pytest.skip("tritonclient is not installed")
    monkeypatch.setattr(triton, "_SCHEMA", None)
    if request.param == "subset":
        monkeypatch.setattr(triton, "_triton_schema", lambda: None)
    yield request.param
    triton._SCHEMA = None


def params(config) -> dict[str, str]:
    p = config.parameters
    if hasattr(p, "items"):  # Triton's map
        return {k: v.string_value for k, v in p.items()}
    return {e.key: e.value.string_value for e in p}  # the subset's repeated entries


def test_python_repository(models, tmp_path, schema):
    repo = tmp_path / "repo"
    out = cli_run(
        "triton-repo", models["dec"], "-o", repo, "--backend", "python", "--name", "dec",
        "--kind", "gpu", "--instances", "3", "--threads", "2", "--max-batch-size", "16",
        "--preferred-batch-size", "4", "--json",
    )  # fmt: skip
    data = json.loads(out)
    assert data["command"] == f"spattn serve {repo}"
    folder = repo / "dec"
    assert (folder / "1" / "model.py").read_text() == triton.PYTHON_MODEL.read_text()
    assert (folder / "1" / "model.onnx").read_bytes() == models["dec"].read_bytes()
    assert (folder / "libspattn_ort.so").stat().st_size > 0
    config, name = triton.parse_config((folder / "config.pbtxt").read_text())
    assert name.startswith("Triton's") == (schema == "triton")
    assert config.backend == "python" and config.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [-1, 32]), ("key_lengths", [1])]
    assert list(config.input[1].reshape.shape) == []
    assert [i.data_type for i in config.input] == [11, 8]  # TYPE_FP32, TYPE_INT32
    assert len(config.output) == 1 and list(config.output[0].dims) == [-1, 32]
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (3, 1)  # KIND_GPU
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert params(config) == {
        "onnx_file": "model.onnx",
        "op_library": "libspattn_ort.so",
        "intra_op_threads": "2",
    }
    assert not config.HasField("model_operations")


def test_python_default_kind_is_auto(models, tmp_path):
    """KIND_AUTO: GPU instances where the server has GPUs, CPU ones elsewhere."""
    cli_run("triton-repo", models["enc"], "-o", tmp_path / "r", "--backend", "python", "-q")
    config, _ = triton.parse_config((tmp_path / "r" / "enc" / "config.pbtxt").read_text())
    assert config.instance_group[0].kind == 0 and config.instance_group[0].count == 1
    cli_run("triton-repo", models["enc"], "-o", tmp_path / "o", "-q")  # onnxruntime: gpu
    config, _ = triton.parse_config((tmp_path / "o" / "enc" / "config.pbtxt").read_text())
    assert config.instance_group[0].kind == 1


def test_bfloat16_is_refused(models, tmp_path):
    import onnx

    proto = onnx.load(str(models["enc"]))
    proto.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
    bf16 = tmp_path / "bf16.onnx"
    onnx.save(proto, str(bf16))
    out = cli_run("triton-repo", bf16, "-o", tmp_path / "r", "--backend", "python", code=1)
    assert "x is bfloat16, which the python backend cannot carry" in out
