"""GPU: our op through ONNX Runtime's CUDA EP vs the direct kernel launch vs ORT's dense attention.

Question: what does serving through ONNX Runtime cost over launching the kernel directly (target:
within 5% at L >= 16K), and how does the op compare with ONNX Runtime's own dense attention
(com.microsoft::MultiHeadAttention) on the same GPU, in the same run?

B=1, 16 heads, float16 (ONNX Runtime's I/O binding takes numpy element types; bfloat16 runs go
through the direct entry in benchmarks/bench_cuda.py). ONNX Runtime runs on torch's current
stream (provider option user_compute_stream). Timings:
  * per call: CUDA events around each call, host overhead included. ONNX Runtime's Run
    synchronizes the stream before it returns, so its fixed cost per call (tens of microseconds)
    counts in full against every call. Median of --iters calls after warm-up.
  * per call with a CUDA graph: the same, from a session with the CUDA EP's provider option
    enable_cuda_graph=1 (its first Runs capture the op's kernels, the later ones replay them), which
    leaves ONNX Runtime's per-Run bookkeeping and synchronization.
  * ONNX Runtime's fixed cost per synchronized Run: host time of a Run at L = --run-cost-length,
    for our op and for com.microsoft::MultiHeadAttention (the kernels take microseconds there).
  * streamed: --stream-calls calls back to back with no synchronization between them (ONNX
    Runtime's run option disable_synchronize_execution_providers), host wall time from an idle
    device to the end of a device-wide synchronization, divided by the number of calls; median of
    5 such runs. This is what a model that keeps the GPU busy sees: the host enqueues the next
    call while the kernels of the previous one run.
Writes benchmarks/results/ort_cuda.json and .png.

    python benchmarks/bench_ort_cuda.py [--lengths 16384 65536] [--dims 64 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from spattn import capi
from spattn.bench import cuda_event_times, require_cuda
from spattn.patterns import Pattern
from spattn.runtime import library_path

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HEADS = 16
PATTERNS = {
    "sliding ±256": {"window_left": 256, "window_right": 256},
    "±256 + 64 global": {"window_left": 256, "window_right": 256, "num_global": 64},
    "BigBird-like (block 64: ±64, 64 global, 2 random)": {
        "window_left": 64,
        "window_right": 64,
        "num_global": 64,
        "num_random": 2,
        "block_size": 64,
        "seed": 0,
    },
    "dense": {},
}


def cuda_time(fn, warmup: int, iters: int) -> float:
    """Median milliseconds of fn() between CUDA events on the current stream."""
    return statistics.median(cuda_event_times(fn, warmup, iters))


def streamed_time(fn, calls: int, runs: int = 5) -> float:
    """Median milliseconds per call of `calls` back-to-back calls, wall time to device idle."""
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per_call.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(per_call)


def host_time_us(fn, iters: int = 50) -> float:
    """Median host wall time of fn() in microseconds, the device idle before each call."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def run_cost_row(d: int, length: int) -> dict:
    """ONNX Runtime's fixed cost per synchronized Run: host time of a Run on a tiny input, for our
    op and for ONNX Runtime's own MultiHeadAttention; the kernels themselves take a few
    microseconds there."""
    q, k, v = (
        torch.randn(1, HEADS, length, d, device="cuda", dtype=torch.float16) for _ in range(3)
    )
    out = torch.empty_like(q)
    sparse = bound(
        session(sparse_model(d, PATTERNS["sliding ±256"]), True),
        {"query": q, "key": k, "value": v},
        out,
    )
    flat = [x.transpose(1, 2).reshape(1, length, HEADS * d).contiguous() for x in (q, k, v)]
    feeds = dict(zip(("query", "key", "value"), flat, strict=True))
    dense = bound(session(dense_model(d), False), feeds, torch.empty_like(flat[0]))
    return {
        "pattern": "ONNX Runtime Run, host time",
        "L": length,
        "D": d,
        "spattn_run_host_us": host_time_us(sparse),
        "ort_mha_run_host_us": host_time_us(dense),
    }


def _model(node, ins, out) -> bytes:
    m = helper.make_model(
        helper.make_graph([node], "g", ins, [out]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(node.domain, 1)],
    )
    m.ir_version = 10
    return m.SerializeToString()


def sparse_model(d: int, attrs: dict, heads_q: int = HEADS, heads_kv: int = HEADS) -> bytes:
    t = TensorProto.FLOAT16
    ins = [
        helper.make_tensor_value_info(n, t, [1, h, "L", d])
        for n, h in (("query", heads_q), ("key", heads_kv), ("value", heads_kv))
    ]
    node = helper.make_node(
        "SparseAttention", ["query", "key", "value"], ["output"], domain="spattn", **attrs
    )
    return _model(node, ins, helper.make_tensor_value_info("output", t, [1, heads_q, "L", d]))


def dense_model(d: int) -> bytes:
    t = TensorProto.FLOAT16
    ins = [
        helper.make_tensor_value_info(n, t, [1, "L", HEADS * d]) for n in ("query", "key", "value")
    ]
    node = helper.make_node(
        "MultiHeadAttention",
        ["query", "key", "value"],
        ["output"],
        domain="com.microsoft",
        num_heads=HEADS,
    )
    return _model(node, ins, helper.make_tensor_value_info("output", t, [1, "L", HEADS * d]))


def session(
    model: bytes, custom: bool, graph_stream: torch.cuda.Stream | None = None
) -> ort.InferenceSession:
    """A CUDA EP session on torch's current stream; with graph_stream, one whose CUDA EP captures
    the model's kernels in a CUDA graph (provider option enable_cuda_graph) on that stream and
    replays it on every later Run."""
    opts = ort.SessionOptions()
    if custom:
        opts.register_custom_ops_library(library_path("ort"))
    stream = graph_stream or torch.cuda.current_stream()
    cuda_opts = {"user_compute_stream": str(stream.cuda_stream)}
    if graph_stream is not None:
        cuda_opts["enable_cuda_graph"] = "1"
    return ort.InferenceSession(
        model, opts, providers=[("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    )


def bound(sess: ort.InferenceSession, inputs: dict, out: torch.Tensor, sync: bool = True):
    """Run with I/O binding on device tensors; sync=False: Run returns without synchronizing."""
    binding = sess.io_binding()
    for name, x in inputs.items():
        binding.bind_input(name, "cuda", 0, np.float16, list(x.shape), x.data_ptr())
    binding.bind_output("output", "cuda", 0, np.float16, list(out.shape), out.data_ptr())
    opts = ort.RunOptions()
    if not sync:
        opts.add_run_config_entry("disable_synchronize_execution_providers", "1")
    return lambda: sess.run_with_iobinding(binding, opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--dense-max", type=int, default=65536)
    ap.add_argument(
        "--stream-calls",
        type=int,
        default=50,
        help="calls per streamed run (see the module docstring)",
    )
    ap.add_argument("--out", default=RESULTS, help="folder for ort_cuda.json and .png")
    ap.add_argument(
        "--run-cost-length",
        type=int,
        default=128,
        help="sequence length of the fixed-cost probe (see run_cost_row)",
    )
    args = ap.parse_args()
    require_cuda("bench_ort_cuda.py")
    torch.manual_seed(0)
    rows = []
    for d in args.dims:
        rows.append(run_cost_row(d, args.run_cost_length))
        print(json.dumps(rows[-1]), flush=True)
    for d in args.dims:
        for length in args.lengths:
            q, k, v = (
                torch.randn(1, HEADS, length, d, device="cuda", dtype=torch.float16)
                for _ in range(3)
            )
            out = torch.empty_like(q)
            for name, attrs in PATTERNS.items():
                heads = HEADS if attrs.get("num_random") else 1  # random blocks differ per head
                pairs = (
                    Pattern.from_attributes(attrs).density(length, heads=heads)
                    * length
                    * length
                    * HEADS
                )
                ws_bytes = capi.cuda_workspace_size(q, k, v, **attrs)
                ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device="cuda")
                stream = torch.cuda.current_stream().cuda_stream

                def direct(q=q, k=k, v=v, out=out, attrs=attrs, ws=ws, stream=stream):
                    capi.cuda_forward(q, k, v, out, stream=stream, workspace=ws, **attrs)

                t_direct = cuda_time(direct, 3, args.iters)
                s_direct = streamed_time(direct, args.stream_calls)
                ref = out.clone()
                sess = session(sparse_model(d, attrs), True)
                feeds = {"query": q, "key": k, "value": v}
                run = bound(sess, feeds, out)
                t_ort = cuda_time(run, 3, args.iters)
                same = bool(torch.equal(out, ref))
                s_ort = streamed_time(bound(sess, feeds, out, sync=False), args.stream_calls)
                same = same and bool(torch.equal(out, ref))
                # CUDA graph: the first Runs capture, the later ones replay (same bound buffers).
                gstream = torch.cuda.Stream()
                gstream.wait_stream(torch.cuda.current_stream())
                out.zero_()
                try:
                    with torch.cuda.stream(gstream):
                        grun = bound(session(sparse_model(d, attrs), True, gstream), feeds, out)
                        grun()
                        grun()
                        t_graph = cuda_time(grun, 3, args.iters)
                    torch.cuda.synchronize()
                    graph_same, graph_error = bool(torch.equal(out, ref)), None
                except Exception as exc:  # noqa: BLE001 - recorded in the results
                    t_graph, graph_same, graph_error = float("nan"), False, str(exc)[:300]
                row = {
                    "pattern": name,
                    "L": length,
                    "D": d,
                    "attributes": attrs,
                    "allowed_pairs": pairs,
                    "direct_ms": t_direct,
                    "ort_cuda_ms": t_ort,
                    "ort_over_direct": t_ort / t_direct,
                    "direct_streamed_ms": s_direct,
                    "ort_cuda_streamed_ms": s_ort,
                    "ort_over_direct_streamed": s_ort / s_direct,
                    "ort_cuda_graph_ms": t_graph,
                    "ort_graph_over_direct": t_graph / t_direct,
                    "ort_output_equals_direct": same,
                    "ort_graph_output_equals_direct": graph_same,
                    "ort_cuda_graph_error": graph_error,
                    "ort_effective_tflops": 4 * d * pairs / (t_ort / 1e3) / 1e12,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            if length <= args.dense_max:
                flat = [
                    x.transpose(1, 2).reshape(1, length, HEADS * d).contiguous() for x in (q, k, v)
                ]
                dout = torch.empty_like(flat[0])
                run = bound(
                    session(dense_model(d), False),
                    dict(zip(("query", "key", "value"), flat, strict=True)),
                    dout,
                )
                t = cuda_time(run, 3, args.iters)
                row = {
                    "pattern": "ORT MultiHeadAttention (dense)",
                    "L": length,
                    "D": d,
                    "ort_cuda_ms": t,
                    "ort_effective_tflops": 4 * d * HEADS * length * length / (t / 1e3) / 1e12,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            del q, k, v, out
            torch.cuda.empty_cache()
    result = {
        "question": "SparseAttention through ONNX Runtime's CUDA EP vs the direct launch vs "
        "com.microsoft::MultiHeadAttention, B=1, 16 heads, float16",
        "command": "python benchmarks/bench_ort_cuda.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ort_cuda.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "ort_cuda.png"))


def plot(result: dict, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    dims = sorted({r["D"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4), squeeze=False)
    for ax, d in zip(axes[0], dims, strict=False):
        for name in list(PATTERNS) + ["ORT MultiHeadAttention (dense)"]:
            rs = [r for r in result["rows"] if r["D"] == d and r["pattern"] == name]
            if rs:
                ax.loglog([r["L"] for r in rs], [r["ort_cuda_ms"] for r in rs], "o-", label=name)
        ax.set_title(f"ONNX Runtime CUDA EP, fp16, 16 heads, D={d}")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
