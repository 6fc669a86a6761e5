"""CPU: spattn::SparseAttention vs ONNX Runtime's dense attention, same shapes, same run.

Question: on a CPU with ONNX Runtime, how much faster is our op than the dense attention users
would otherwise run (com.microsoft::MultiHeadAttention), how efficient is it on the pairs it is
allowed to compute (effective GFLOP/s = 4 * B * H * D * allowed pairs / time), and does its
memory grow linearly with the sequence length?

Shapes: B=1, 8 heads, D=64, float32, pattern band +-256 plus 64 global tokens (Longformer-style).
Both ops run in ONNX Runtime's CPU execution provider with the same intra-op thread count; the
measurement code is spattn.bench's (the `spattn bench` command). Writes
benchmarks/results/cpu_sparse_vs_dense.json and .png.

    python benchmarks/bench_cpu.py [--threads 2] [--lengths 1024 4096 16384]
                                   [--memory 16384 32768 65536]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import onnxruntime as ort

from spattn.bench import DEFAULT_PATTERN, BenchConfig, measure_memory, run_benchmark
from spattn.patterns import Pattern

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SPARSE, DENSE = "spattn-ort-cpu", "dense-ort-cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--memory", type=int, nargs="+", default=[16384, 32768, 65536])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    cfg = BenchConfig(
        lengths=args.lengths,
        heads=8,
        kv_heads=8,
        head_dim=64,
        attributes=dict(DEFAULT_PATTERN),
        threads=args.threads,
        warmup=1,
        repeat=args.repeat,
        dense_max=max(args.lengths),
        memory=False,
    )
    sweep = run_benchmark(cfg, device="cpu")
    pattern = Pattern.from_attributes(DEFAULT_PATTERN)
    rows = []
    for r in sweep["rows"]:
        length, t = r["length"], r["times_ms"]
        pairs = round(pattern.density(length) * length * length) * cfg.heads
        row = {
            "length": length,
            "density": pairs / (cfg.heads * length * length),
            "allowed_pairs": pairs,
            "sparse_ms": t[SPARSE],
        }
        row["sparse_effective_gflops"] = 4 * cfg.head_dim * pairs / (t[SPARSE] / 1e3) / 1e9
        if t.get(DENSE):
            row["dense_ms"] = t[DENSE]
            row["dense_gflops"] = (
                4 * cfg.head_dim * cfg.heads * length * length / (t[DENSE] / 1e3) / 1e9
            )
            row["speedup_vs_dense"] = t[DENSE] / t[SPARSE]
            row["effective_vs_dense_gflops"] = row["sparse_effective_gflops"] / row["dense_gflops"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    memory = []
    for length in args.memory:
        growth = measure_memory(SPARSE, cfg, length)["run_growth_bytes"]
        output = cfg.batch * cfg.heads * length * cfg.head_dim * 4
        memory.append(
            {
                "length": length,
                "run_growth_bytes": growth,
                "output_bytes": output,
                "growth_minus_output_bytes": growth - output,
            }
        )
        print(json.dumps(memory[-1]), flush=True)

    result = {
        "question": "SparseAttention (band +-256 + 64 global) vs com.microsoft::MultiHeadAttention "
        "(dense), ONNX Runtime CPU EP, B=1, 8 heads, D=64, float32",
        "command": "python benchmarks/bench_cpu.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "timing": rows,
        "memory": memory,
        "notes": sweep["notes"],
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
    ax1.loglog(
        [r["length"] for r in t], [r["sparse_ms"] for r in t], "o-", label="spattn SparseAttention"
    )
    d = [r for r in t if "dense_ms" in r]
    ax1.loglog(
        [r["length"] for r in d],
        [r["dense_ms"] for r in d],
        "s-",
        label="ORT MultiHeadAttention (dense)",
    )
    ax1.set_xlabel("sequence length")
    ax1.set_ylabel("time (ms)")
    ax1.set_title("ONNX Runtime CPU, 8 heads, D=64, fp32")
    ax1.legend()
    ax1.grid(True, which="both", alpha=0.3)
    m = result["memory"]
    ax2.plot(
        [r["length"] for r in m],
        [r["run_growth_bytes"] / 2**20 for r in m],
        "o-",
        label="peak memory added by one run",
    )
    ax2.plot(
        [r["length"] for r in m],
        [r["output_bytes"] / 2**20 for r in m],
        "--",
        label="output tensor",
    )
    ax2.set_xlabel("sequence length")
    ax2.set_ylabel("MiB")
    ax2.set_title("spattn memory (band +-256 + 64 global)")
    ax2.legend()
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
