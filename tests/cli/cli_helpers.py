"""Helpers of the command-line tests: tiny exported models (made once per session) and a
CliRunner wrapper. Not a conftest.py: tests/python's modules import their own `conftest`."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from spattn.cli import cli

#: Factory parameters of the tiny Longformer-style encoder used throughout.
ENCODER_PARAMS = [
    "-p",
    "seq_len=32",
    "-p",
    "d_model=32",
    "-p",
    "nhead=2",
    "-p",
    "num_layers=1",
    "-p",
    "attention_window=8",
    "-p",
    "batch=1",
]
#: Factory parameters of the tiny GQA decoder block (inputs x and key_lengths).
DECODER_PARAMS = [
    "-p",
    "seq_len=24",
    "-p",
    "d_model=32",
    "-p",
    "num_heads=4",
    "-p",
    "num_kv_heads=2",
    "-p",
    "window=8",
    "-p",
    "batch=2",
]


def invoke(*args: str, code: int | None = 0):
    """Run the CLI in-process; assert the exit status and that no traceback was printed."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    text = result.output
    if code is not None:
        assert result.exit_code == code, (result.exit_code, text, result.exception)
    if code != 0 and "--debug" not in args:
        assert "Traceback" not in text, text
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), repr(result.exception)
    return result


def invoke_json(*args: str, code: int = 0) -> dict:
    """Run with --json and parse stdout as one JSON object."""
    result = invoke(*args, "--json", code=code)
    return json.loads(result.stdout)


_TMP = Path(tempfile.mkdtemp(prefix="spattn_cli_tests_"))
atexit.register(shutil.rmtree, _TMP, True)


@functools.cache
def encoder_model() -> Path:
    """The tiny encoder exported (and validated) by `spattn export`, once per session."""
    out = _TMP / "encoder" / "encoder.onnx"
    invoke("export", "longformer_encoder", "-o", out, *ENCODER_PARAMS, "-q")
    return out


@functools.cache
def decoder_model() -> Path:
    """The tiny GQA decoder block (key_lengths input) exported by `spattn export`, once."""
    out = _TMP / "decoder" / "decoder.onnx"
    invoke("export", "gqa_decoder_block", "-o", out, *DECODER_PARAMS, "-q")
    return out


def sparse_model(path: Path, **attrs) -> Path:
    """A one-node SparseAttention model with the given attributes (valid or not)."""
    ins = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2, "seq", 8])
        for n in ("query", "key", "value")
    ]
    node = helper.make_node(
        "SparseAttention",
        ["query", "key", "value"],
        ["output"],
        domain="spattn",
        name="attn0",
        **attrs,
    )
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2, "seq", 8])
    model = helper.make_model(
        helper.make_graph([node], "g", ins, [out]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def plain_model(path: Path) -> Path:
    """An ONNX model without any spattn node."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 10
    onnx.save(model, str(path))
    return path
