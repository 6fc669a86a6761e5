"""CPU: spattn::SparseAttention vs ONNX Runtime's dense attention, same shapes, same run.

Question: on a CPU with ONNX Runtime, how much faster is our op than the dense attention users
would otherwise run (com.microsoft::MultiHeadAttention), how efficient is it on the pairs it is
allowed to compute, and does its memory grow linearly with the sequence length?

Shapes: B=1, 8 heads, D=64, float32, pattern band +-256 plus 64 global tokens (Longformer-style).
Both ops run in ONNX Runtime's CPU execution provider with the same intra-op thread count.
Writes benchmarks/results/cpu_sparse_vs_dense.json and .png.

    python benchmarks/bench_cpu.py [--threads 2] [--lengths 1024 4096 16384] [--memory 16384 32768 65536]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, DIM = 8, 64
PATTERN = {"window_left": 256, "window_right": 256, "num_global": 64}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def allowed_pairs(length: int, wl: int, wr: int, g: int) -> int:
    """Allowed (query, key) pairs of the band + global pattern for one head (Lq = Lk)."""
    i = np.arange(length, dtype=np.int64)
    lo, hi = np.maximum(i - wl, 0), np.minimum(i + wr, length - 1)
    band = hi - lo + 1
    extra_global = np.minimum(lo, g)  # global keys left of the band
    rows = band + extra_global
    rows[:g] = length  # global queries see every key
    return int(rows.sum())


def sparse_model() -> bytes:
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, HEADS, "L", DIM])
           for n in ("query", "key", "value")]
    node = helper.make_node("SparseAttention", ["query", "key", "value"], ["output"],
                            domain="spattn", **PATTERN)
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, HEADS, "L", DIM])
    model = helper.make_model(helper.make_graph([node], "sparse", ins, [out]),
                              opset_imports=[helper.make_opsetid("", 18),
                                             helper.make_opsetid("spattn", 1)])
    model.ir_version = 10
    return model.SerializeToString()


def dense_model() -> bytes:
    """com.microsoft::MultiHeadAttention: ONNX Runtime's own fused dense attention."""
    hidden = HEADS * DIM
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "L", hidden])
           for n in ("query", "key", "value")]
    node = helper.make_node("MultiHeadAttention", ["query", "key", "value"], ["output"],
                            domain="com.microsoft", num_heads=HEADS)
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, "L", hidden])
    model = helper.make_model(helper.make_graph([node], "dense", ins, [out]),
                              opset_imports=[helper.make_opsetid("", 18),
                                             helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model.SerializeToString()


def session(model: bytes, threads: int, lib: str | None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if lib:
        opts.register_custom_ops_library(lib)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def time_session(sess: ort.InferenceSession, feeds: dict, repeats: int) -> list[float]:
    sess.run(None, feeds)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return times


def library() -> str:
    from spattn.runtime import library_path  # noqa: PLC0415 (no torch import)

    return library_path("ort")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(length: int, threads: int) -> None:
    """Runs the sparse op at `length`; prints the peak resident memory the run added.

    The kernel's own memory is per-thread scratch of fixed size plus the output tensor; an L x L
    score matrix at L = 65,536 would be 128 GiB per head, so any quadratic term would show.
    """
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((1, HEADS, length, DIM), dtype=np.float32)
             for n in ("query", "key", "value")}
    sess = session(sparse_model(), threads, library())
    sess.run(None, {n: x[:, :, :128] for n, x in feeds.items()})  # load, warm the thread pool
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    sess.run(None, feeds)
    peak = _status_bytes("VmHWM")
    output = HEADS * length * DIM * 4
    print(json.dumps({"length": length, "rss_before_run_bytes": base, "peak_rss_bytes": peak,
                      "run_growth_bytes": peak - base, "output_bytes": output,
                      "input_bytes": 3 * output}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--memory", type=int, nargs="+", default=[16384, 32768, 65536])
    parser.add_argument("--dense-max", type=int, default=16384,
                        help="longest length to run the dense op at (it needs 4*H*L^2 bytes)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return

    lib = library()
    sparse = session(sparse_model(), args.threads, lib)
    dense = session(dense_model(), args.threads, None)
    rng = np.random.default_rng(0)
    rows = []
    for length in args.lengths:
        qkv = [rng.standard_normal((1, HEADS, length, DIM), dtype=np.float32) for _ in range(3)]
        repeats = 9 if length <= 4096 else 5
        ts = time_session(sparse, dict(zip(("query", "key", "value"), qkv)), repeats)
        pairs = HEADS * allowed_pairs(length, PATTERN["window_left"], PATTERN["window_right"],
                                      PATTERN["num_global"])
        row = {"length": length, "sparse_ms": 1e3 * float(np.median(ts)),
               "allowed_pairs": pairs, "density": pairs / (HEADS * length * length)}
        row["sparse_effective_gflops"] = 4 * DIM * pairs / (row["sparse_ms"] / 1e3) / 1e9
        if length <= args.dense_max:
            flat = {n: x.transpose(0, 2, 1, 3).reshape(1, length, HEADS * DIM).copy()
                    for n, x in zip(("query", "key", "value"), qkv)}
            td = time_session(dense, flat, 1 if length > 4096 else 3)
            row["dense_ms"] = 1e3 * float(np.median(td))
            row["dense_gflops"] = 4 * DIM * HEADS * length * length / (row["dense_ms"] / 1e3) / 1e9
            row["speedup_vs_dense"] = row["dense_ms"] / row["sparse_ms"]
            row["effective_vs_dense_gflops"] = row["sparse_effective_gflops"] / row["dense_gflops"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    memory = []
    for length in args.memory:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                              str(length), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        memory.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(memory[-1]), flush=True)

    result = {
        "question": "SparseAttention (band +-256 + 64 global) vs com.microsoft::MultiHeadAttention "
                    "(dense), ONNX Runtime CPU EP, B=1, 8 heads, D=64, float32",
        "command": "python benchmarks/bench_cpu.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": _cpu_name(),
                    "cpus": os.cpu_count(), "threads": args.threads,
                    "onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "timing": rows,
        "memory": memory,
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "cpu_sparse_vs_dense.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(RESULTS, "cpu_sparse_vs_dense.png"))
    print(f"wrote {path}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def plot(result: dict, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    t = result["timing"]
    ax1.loglog([r["length"] for r in t], [r["sparse_ms"] for r in t], "o-", label="spattn SparseAttention")
    d = [r for r in t if "dense_ms" in r]
    ax1.loglog([r["length"] for r in d], [r["dense_ms"] for r in d], "s-", label="ORT MultiHeadAttention (dense)")
    ax1.set_xlabel("sequence length")
    ax1.set_ylabel("time (ms)")
    ax1.set_title("ONNX Runtime CPU, 8 heads, D=64, fp32")
    ax1.legend()
    ax1.grid(True, which="both", alpha=0.3)
    m = result["memory"]
    ax2.plot([r["length"] for r in m], [r["run_growth_bytes"] / 2**20 for r in m], "o-",
             label="growth of peak RSS during the run")
    ax2.plot([r["length"] for r in m], [r["output_bytes"] / 2**20 for r in m], "--",
             label="output tensor")
    ax2.set_xlabel("sequence length")
    ax2.set_ylabel("MiB")
    ax2.set_title("spattn memory (band +-256 + 64 global)")
    ax2.legend()
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
