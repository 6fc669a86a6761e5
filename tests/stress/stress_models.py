"""Models, inputs and the RSS probe shared by the concurrency and soak tests (tests/stress/)."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from spattn.runtime import library_path

INPUTS = (
    "query",
    "key",
    "value",
    "key_lengths",
    "block_indices",
    "global_mask",
    "key_starts",
    "sinks",
)
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
OPTIONAL_ELEM = {
    "key_lengths": TensorProto.INT32,
    "block_indices": TensorProto.INT32,
    "global_mask": TensorProto.INT32,
    "key_starts": TensorProto.INT32,
    "sinks": TensorProto.FLOAT,
}
BLOCK = 16

# Each pattern: its attributes and the optional inputs it feeds.
PATTERNS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "global": ({"window_left": 8, "window_right": 8, "num_global": 5}, ("global_mask",)),
    "random": (
        {"window_left": 16, "window_right": 16, "num_random": 2, "block_size": BLOCK, "seed": 7},
        (),
    ),
    "block_indices": ({"block_size": BLOCK, "window_left": 4, "causal": 1}, ("block_indices",)),
    "padding": ({"causal": 1, "window_left": 40}, ("key_lengths", "key_starts")),
    "sinks": ({"window_left": 24, "window_right": 0, "softcap": 20.0}, ("sinks", "key_lengths")),
}


def model(dtype: str, attrs: dict, present: tuple[str, ...]) -> bytes:
    """One SparseAttention node with query/key/value/output in `dtype` (no casts around it) and
    the optional inputs `present`, all of dynamic shape."""
    last = max([2] + [INPUTS.index(n) for n in present])
    names, ins = [], []
    for idx, name in enumerate(INPUTS[: last + 1]):
        if idx < 3:
            ins.append(helper.make_tensor_value_info(name, ELEM[dtype], None))
            names.append(name)
        elif name in present:
            ins.append(helper.make_tensor_value_info(name, OPTIONAL_ELEM[name], None))
            names.append(name)
        else:
            names.append("")
    node = helper.make_node("SparseAttention", names, ["output"], domain="spattn", **attrs)
    out = helper.make_tensor_value_info("output", ELEM[dtype], None)
    graph = helper.make_graph([node], "g", ins, [out])
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)]
    )
    m.ir_version = 10
    return m.SerializeToString()


def session(
    model_bytes: bytes, threads: int = 2, providers=("CPUExecutionProvider",)
) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, so, providers=list(providers))


def feeds(
    dtype: str, present: tuple[str, ...], shape: tuple[int, ...], seed: int
) -> dict[str, np.ndarray]:
    """Inputs for shape (B, Hq, Hkv, Lq, Lk, D); padding and block lists differ per seed."""
    b, hq, hkv, lq, lk, d = shape
    g = np.random.default_rng(seed)
    np_dtype = np.float32 if dtype == "float32" else np.float16
    out = {
        "query": g.standard_normal((b, hq, lq, d)).astype(np_dtype),
        "key": g.standard_normal((b, hkv, lk, d)).astype(np_dtype),
        "value": g.standard_normal((b, hkv, lk, d)).astype(np_dtype),
    }
    lengths = g.integers(lk // 2, lk + 1, size=b).astype(np.int32)
    if "key_lengths" in present:
        out["key_lengths"] = lengths
    if "key_starts" in present:
        out["key_starts"] = np.minimum(g.integers(0, 9, size=b), lengths).astype(np.int32)
    if "block_indices" in present:
        nqb, nkb = -(-lq // BLOCK), -(-lk // BLOCK)
        out["block_indices"] = g.integers(-1, nkb, size=(hq, nqb, 3)).astype(np.int32)
    if "global_mask" in present:
        out["global_mask"] = (g.random((b, lk)) < 0.1).astype(np.int32)
    if "sinks" in present:
        out["sinks"] = g.standard_normal(hq).astype(np.float32)
    return out


def rss_bytes() -> int:
    """Resident set size of this process (/proc/self/statm, second field, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
