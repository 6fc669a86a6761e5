"""spattn.trt without TensorRT: it imports, says how to get TensorRT, and raises a clear error."""

from __future__ import annotations

import importlib.util

import pytest

trt_mod = pytest.importorskip("spattn.trt")

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_available_returns_a_reason():
    ok, message = trt_mod.available()
    assert isinstance(ok, bool) and message
    if not HAS_TENSORRT:
        assert not ok
        assert "pip install tensorrt-cu13" in message


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
@pytest.mark.parametrize(
    "call",
    [
        lambda: trt_mod.build_engine("m.onnx", "m.plan"),
        lambda: trt_mod.run_engine("m.plan", {}),
    ],
    ids=["build_engine", "run_engine"],
)
def test_functions_name_the_missing_package(call):
    with pytest.raises(RuntimeError, match="`tensorrt` is not installed"):
        call()


def test_signatures():
    import inspect

    sig = inspect.signature(trt_mod.build_engine)
    for name in (
        "min_shapes",
        "opt_shapes",
        "max_shapes",
        "strongly_typed",
        "fp16",
        "bf16",
        "workspace_mb",
        "timing_cache",
        "progress",
    ):
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["strongly_typed"].default is True
