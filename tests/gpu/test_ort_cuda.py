"""End to end on ONNX Runtime's CUDA execution provider with our library registered.

The same model file runs on [CUDA, CPU] and on [CPU]: the op must be placed on the CUDA EP (read
from ONNX Runtime's profile), read device tensors bound with I/O binding, and agree with the CPU
kernel (itself checked against the float32 oracle) within the spec's tolerances.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402

from spattn.runtime import library_path  # noqa: E402
from spattn.tolerances import assert_close  # noqa: E402

pytestmark = pytest.mark.gpu
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip(
        "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)",
        allow_module_level=True,
    )
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

PATTERNS = {
    "sliding": {"window_left": 64, "window_right": 64},
    "longformer": {"window_left": 64, "window_right": 64, "num_global": 16},
    "bigbird": {
        "window_left": 64,
        "window_right": 64,
        "num_global": 64,
        "num_random": 2,
        "block_size": 64,
        "seed": 7,
    },
    "causal_window": {"window_left": 127, "causal": 1},
    "dense": {},
}
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _model(dtype, attrs, with_lengths: bool) -> bytes:
    t = ONNX_TYPES[dtype]
    names = ["query", "key", "value"] + (["key_lengths"] if with_lengths else [])
    ins = [
        helper.make_tensor_value_info(n, t, ["B", f"H{n[0]}", f"L{n[0]}", "D"]) for n in names[:3]
    ]
    if with_lengths:
        ins.append(helper.make_tensor_value_info("key_lengths", TensorProto.INT32, ["B"]))
    node = helper.make_node("SparseAttention", names, ["output"], domain="spattn", **attrs)
    out = helper.make_tensor_value_info("output", t, None)
    m = helper.make_model(
        helper.make_graph([node], "g", ins, [out]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("spattn", 1)],
    )
    m.ir_version = 10
    return m.SerializeToString()


def _session(model: bytes, providers, profile_dir=None):
    # TF32 off: the float32 comparisons must measure our op, not TF32 MatMuls around it.
    providers = [
        ("CUDAExecutionProvider", {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p
        for p in providers
    ]
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "prof")
    return ort.InferenceSession(model, so, providers=providers)


def _providers_of_op(profile_path: str, op: str = "SparseAttention") -> set[str]:
    with open(profile_path) as f:
        events = json.load(f)
    return {
        e["args"]["provider"]
        for e in events
        if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == op
    }


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["float16", "float32"])
@pytest.mark.parametrize("gqa", [1, 4])
def test_cuda_ep_matches_cpu_ep(name, dtype, gqa, tmp_path):
    b, hq, lq, lk, d = 2, 8, 700, 700, 64
    hkv = hq // gqa
    g = np.random.default_rng(0)
    feeds = {
        "query": g.standard_normal((b, hq, lq, d)).astype(dtype),
        "key": g.standard_normal((b, hkv, lk, d)).astype(dtype),
        "value": g.standard_normal((b, hkv, lk, d)).astype(dtype),
        "key_lengths": np.array([lk, 433], dtype=np.int32),
    }
    model = _model(dtype, PATTERNS[name], with_lengths=True)
    cpu = _session(model, ["CPUExecutionProvider"]).run(None, feeds)[0]

    sess = _session(model, ["CUDAExecutionProvider", "CPUExecutionProvider"], str(tmp_path))
    binding = sess.io_binding()
    device = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    for k, v in device.items():
        binding.bind_input(k, "cuda", 0, feeds[k].dtype, list(v.shape), v.data_ptr())
    out = torch.empty((b, hq, lq, d), dtype=device["query"].dtype, device="cuda")
    binding.bind_output("output", "cuda", 0, dtype, list(out.shape), out.data_ptr())
    sess.run_with_iobinding(binding)
    gpu = out.cpu().numpy()
    assert _providers_of_op(sess.end_profiling()) == {"CUDAExecutionProvider"}
    assert np.isfinite(gpu).all()
    assert_close(gpu, cpu, dtype)


# Decode steps (the query heads of a GQA group stacked into one tile on the CUDA EP, split over a
# long cache): the workspace ONNX Runtime allocates for the call is the one the stacked call needs.
@pytest.mark.parametrize("name", ["causal_window", "longformer", "dense"])
@pytest.mark.parametrize("lq", [1, 8])
def test_cuda_ep_decode_steps_match_cpu_ep(name, lq, tmp_path):
    b, hq, hkv, lk, d = 3, 32, 8, 5000, 128
    g = np.random.default_rng(1)
    feeds = {
        "query": g.standard_normal((b, hq, lq, d)).astype(np.float16),
        "key": g.standard_normal((b, hkv, lk, d)).astype(np.float16),
        "value": g.standard_normal((b, hkv, lk, d)).astype(np.float16),
        "key_lengths": np.array([lk, 2345, 1], dtype=np.int32),
    }
    attrs = dict(PATTERNS[name], causal=1)
    model = _model(np.float16, attrs, with_lengths=True)
    cpu = _session(model, ["CPUExecutionProvider"]).run(None, feeds)[0]
    sess = _session(model, ["CUDAExecutionProvider", "CPUExecutionProvider"], str(tmp_path))
    gpu = sess.run(None, feeds)[0]
    assert _providers_of_op(sess.end_profiling()) == {"CUDAExecutionProvider"}
    assert np.isfinite(gpu).all()
    assert_close(gpu, cpu, np.float16)


def test_exported_model_runs_on_both_providers(tmp_path):
    from spattn import export
    from spattn.models import longformer_encoder

    model, (x,) = longformer_encoder(
        d_model=128, nhead=2, attention_window=64, num_global=4, seq_len=512, batch=1
    )
    path = str(tmp_path / "encoder.onnx")
    report = export(model, (x,), path)
    assert report.passed and report.num_spattn_nodes == 2
    with open(path, "rb") as f:
        data = f.read()
    feeds = {_session(data, ["CPUExecutionProvider"]).get_inputs()[0].name: x.numpy()}
    cpu = _session(data, ["CPUExecutionProvider"]).run(None, feeds)[0]
    sess = _session(data, ["CUDAExecutionProvider", "CPUExecutionProvider"], str(tmp_path))
    gpu = sess.run(None, feeds)[0]
    assert _providers_of_op(sess.end_profiling()) == {"CUDAExecutionProvider"}
    assert_close(gpu, cpu, np.float32)


def test_bad_input_is_an_error_not_a_crash():
    model = _model(np.float16, PATTERNS["sliding"], with_lengths=False)
    sess = _session(model, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    g = np.random.default_rng(0)
    feeds = {
        "query": g.standard_normal((1, 3, 64, 64)).astype(np.float16),  # 3 % 2 != 0
        "key": g.standard_normal((1, 2, 64, 64)).astype(np.float16),
        "value": g.standard_normal((1, 2, 64, 64)).astype(np.float16),
    }
    with pytest.raises(Exception, match="multiple of"):
        sess.run(None, feeds)


@pytest.mark.parametrize("name", ["sliding", "longformer", "bigbird"])
def test_cuda_graph_capture_replays_new_inputs(name):
    """The CUDA EP's enable_cuda_graph captures the op (no host sync, no per-call host planning):
    a replay on new values written into the bound buffers gives the uncaptured session's answer.
    longformer and bigbird run the split plan with its workspace and combine kernel."""
    b, h, lq, d = 1, 4, 1024, 64
    model = _model(np.float16, PATTERNS[name], with_lengths=False)
    stream = torch.cuda.Stream()
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    graph = ort.InferenceSession(
        model,
        so,
        providers=[
            (
                "CUDAExecutionProvider",
                {"enable_cuda_graph": "1", "user_compute_stream": str(stream.cuda_stream)},
            ),
            "CPUExecutionProvider",
        ],
    )
    plain = _session(model, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    gen = torch.Generator(device="cuda").manual_seed(0)
    ins = {
        n: torch.randn(b, h, lq, d, device="cuda", dtype=torch.float16, generator=gen)
        for n in ("query", "key", "value")
    }
    out = torch.zeros(b, h, lq, d, device="cuda", dtype=torch.float16)
    binding = graph.io_binding()
    for n, x in ins.items():
        binding.bind_input(n, "cuda", 0, np.float16, list(x.shape), x.data_ptr())
    binding.bind_output("output", "cuda", 0, np.float16, list(out.shape), out.data_ptr())
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        graph.run_with_iobinding(binding)  # regular run, then the capture
        graph.run_with_iobinding(binding)
    for _ in range(2):  # new values in the same buffers, then a replay
        with torch.cuda.stream(stream):
            for x in ins.values():
                x.copy_(torch.randn(x.shape, device="cuda", dtype=x.dtype, generator=gen))
            out.zero_()
            graph.run_with_iobinding(binding)
        torch.cuda.synchronize()
        want = plain.run(None, {n: x.cpu().numpy() for n, x in ins.items()})[0]
        got = out.cpu().numpy()
        assert np.abs(want).max() > 0
        assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["longformer", "bigbird", "sliding"])
def test_threads_on_one_session_equal_one_thread(name):
    """8 threads calling Run on one CUDA EP session give, bitwise, what one thread gives.

    Concurrent runs use different CUDA streams: a workspace handed back to a shared arena right
    after the enqueue was rewritten by another run while the first kernel still read it. The
    global and random patterns use the split-KV workspace at this size, the band does not.
    """
    import concurrent.futures as cf

    rng = np.random.default_rng(3)
    sess = _session(_model(np.float16, PATTERNS[name], True), ["CUDAExecutionProvider"])
    feeds = []
    for i in range(16):
        b, h, n, d = 2, 8, 2048 + 64 * i, 64
        q, k, v = (rng.standard_normal((b, h, n, d)).astype(np.float16) for _ in range(3))
        lengths = np.array([n, n - 37 * (i + 1)], np.int32)
        feeds.append({"query": q, "key": k, "value": v, "key_lengths": lengths})
    want = [sess.run(None, f)[0] for f in feeds]

    def work(i: int) -> bool:
        return bool(np.array_equal(sess.run(None, feeds[i % len(feeds)])[0], want[i % len(feeds)]))

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8 * 24)))
    assert all(results), f"{results.count(False)} of {len(results)} concurrent runs differ"
