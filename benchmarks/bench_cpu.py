"""CPU: spattn::SparseAttention vs ONNX Runtime's dense attention, same shapes, same run.

Question: on a CPU with ONNX Runtime, how much faster is our op than the dense attention users
would otherwise run (com.microsoft::MultiHeadAttention), how efficient is it on the pairs it is
allowed to compute (effective GFLOP/s = 4 * B * H * D * allowed pairs / time), and does its
memory grow linearly with the sequence length?

Shapes: B=1, 8 heads, D=64, float32, pattern band +-256 plus 64 global tokens (Longformer-style).
Both ops run in ONNX Runtime's CPU execution provider with the same intra-op thread count
(``session.run`` with numpy inputs). Timing: after a warm-up call of each, ``--rounds`` rounds,
each timing ``--calls`` consecutive calls of our op and of the dense op (the order alternating
by round, ``--pause-ms`` before each block so that no block runs beside another session's
spinning pool threads; a round's time is its median call), so that load from other jobs on a
shared machine falls on both alike; reported: the median over rounds with min, max and
quartiles, the speedup as the ratio of the medians, and the spread of the per-round ratios. The
1-minute load average before and after each length is recorded.
Memory: the growth of the peak resident set in one run, in a child process per length
(spattn.bench.measure_memory). ``--baseline-lib PATH`` times another build of our library beside
it in the same rounds (a before/after of a kernel change). Writes
benchmarks/results/cpu_sparse_vs_dense.json and .png (or ``--out``).

    python benchmarks/bench_cpu.py [--threads 2] [--lengths 1024 4096 16384] [--rounds 15]
                                   [--calls 3] [--memory 16384 32768 65536]
                                   [--target 5 --target-length 4096]
                                   [--dense-max 16384] [--baseline-lib PATH] [--pause-ms 100]
                                   [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

from spattn.bench import (
    DEFAULT_PATTERN,
    BenchConfig,
    dense_attention_model,
    measure_memory,
    sparse_attention_model,
)
from spattn.patterns import Pattern
from spattn.runtime import library_path

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SPARSE, DENSE, BASELINE = "spattn-ort-cpu", "dense-ort-cpu", "spattn-baseline-ort-cpu"


def _session(model: bytes, threads: int, library: str | None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if library:
        opts.register_custom_ops_library(library)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _feeds(cfg: BenchConfig, length: int) -> tuple[dict, dict]:
    """Our op's inputs [B, H, L, D] and the same tensors as MultiHeadAttention's [B, L, H * D]."""
    rng = np.random.default_rng(length)
    shape = (cfg.batch, cfg.heads, length, cfg.head_dim)
    ours = {n: rng.standard_normal(shape, dtype=np.float32) for n in ("query", "key", "value")}
    dense = {
        n: np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(cfg.batch, length, -1))
        for n, x in ours.items()
    }
    return ours, dense


def _spread(times: list[float]) -> dict[str, float]:
    q25, q75 = np.percentile(times, [25, 75])
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "q25": float(q25),
        "q75": float(q75),
    }


def time_length(
    cfg: BenchConfig,
    length: int,
    rounds: int,
    calls_per_round: int,
    dense: bool,
    baseline: str | None,
    pause_s: float,
) -> dict[str, list[float]]:
    """Per-round wall-clock times (ms): the median of each backend's calls, interleaved.

    Each block of calls starts ``pause_s`` after the previous one: every session has its own
    intra-op thread pool, whose threads spin for a while after a run. A call that starts while
    another session's threads still spin shares the cores with them (about 1.3x the time on two
    cores), so without the pause a backend would be timed slower merely for following another.
    """
    feeds_s, feeds_d = _feeds(cfg, length)
    sparse = sparse_attention_model(cfg)
    calls = {SPARSE: (_session(sparse, cfg.threads, library_path("ort")), feeds_s)}
    if baseline:
        calls[BASELINE] = (_session(sparse, cfg.threads, baseline), feeds_s)
    if dense:
        calls[DENSE] = (_session(dense_attention_model(cfg), cfg.threads, None), feeds_d)
    for session, feeds in calls.values():  # the warm-up call
        session.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in order:
            session, feeds = calls[name]
            time.sleep(pause_s)
            block = []
            for _ in range(calls_per_round):
                t0 = time.perf_counter()
                session.run(None, feeds)
                block.append((time.perf_counter() - t0) * 1e3)
            times[name].append(statistics.median(block))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--memory", type=int, nargs="*", default=[16384, 32768, 65536])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3, help="calls per backend per round")
    parser.add_argument("--dense-max", type=int, default=16384, help="longest L run densely")
    parser.add_argument("--target", type=float, default=5.0, help="speedup asked for ...")
    parser.add_argument("--target-length", type=int, default=4096, help="... at this length")
    parser.add_argument("--baseline-lib", help="another build of libspattn_ort.so to time beside")
    parser.add_argument(
        "--pause-ms", type=float, default=100, help="pause before each block of calls (ms)"
    )
    parser.add_argument("--out", default=os.path.join(RESULTS, "cpu_sparse_vs_dense.json"))
    parser.add_argument("--note", default="", help="recorded in the JSON")
    args = parser.parse_args()

    cfg = BenchConfig(
        lengths=args.lengths,
        heads=8,
        kv_heads=8,
        head_dim=64,
        attributes=dict(DEFAULT_PATTERN),
        threads=args.threads,
        memory=False,
    )
    pattern = Pattern.from_attributes(DEFAULT_PATTERN)
    rows = []
    for length in args.lengths:
        load_before = os.getloadavg()[0]
        times = time_length(
            cfg,
            length,
            args.rounds,
            args.calls,
            length <= args.dense_max,
            args.baseline_lib,
            args.pause_ms / 1e3,
        )
        sparse = _spread(times[SPARSE])
        pairs = round(pattern.density(length) * length * length) * cfg.heads
        row = {
            "length": length,
            "density": pairs / (cfg.heads * length * length),
            "allowed_pairs": pairs,
            "sparse_ms": sparse["median"],
            "sparse_ms_spread": sparse,
            "sparse_round_ms": times[SPARSE],
        }
        row["sparse_effective_gflops"] = 4 * cfg.head_dim * pairs / (sparse["median"] / 1e3) / 1e9
        if DENSE in times:
            dense = _spread(times[DENSE])
            ratios = [d / s for s, d in zip(times[SPARSE], times[DENSE], strict=True)]
            row["dense_ms"] = dense["median"]
            row["dense_ms_spread"] = dense
            row["dense_round_ms"] = times[DENSE]
            row["dense_gflops"] = (
                4 * cfg.head_dim * cfg.heads * length * length / (dense["median"] / 1e3) / 1e9
            )
            row["speedup_vs_dense"] = dense["median"] / sparse["median"]
            row["speedup_per_round"] = _spread(ratios)
            row["effective_vs_dense_gflops"] = row["sparse_effective_gflops"] / row["dense_gflops"]
            if length == args.target_length:
                row["target_speedup"] = args.target
                row["target_met"] = bool(row["speedup_vs_dense"] >= args.target)
        else:
            row["dense_not_run"] = (
                f"L > --dense-max {args.dense_max}: MultiHeadAttention's CPU kernel holds the "
                f"whole score matrix ({cfg.heads * length * length * 4 / 2**30:.0f} GiB here)"
            )
        if BASELINE in times:
            row["baseline_ms"] = statistics.median(times[BASELINE])
            row["baseline_ms_spread"] = _spread(times[BASELINE])
            row["baseline_round_ms"] = times[BASELINE]
            row["speedup_vs_baseline"] = row["baseline_ms"] / sparse["median"]
        row["loadavg_1min_before"] = load_before
        row["loadavg_1min_after"] = os.getloadavg()[0]
        rows.append(row)
        print(
            json.dumps({k: v for k, v in row.items() if not k.endswith(("round_ms", "spread"))}),
            flush=True,
        )

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
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "library": library_path("ort"),
        "baseline_library": args.baseline_lib,
        "pause_ms": args.pause_ms,
        "note": args.note,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "timing_method": f"{args.rounds} rounds after one warm-up call each; a round times "
        f"{args.calls} consecutive calls of each op, {args.pause_ms:g} ms after the previous "
        "block (another session's pool threads spin a while after its run; order alternating), "
        "its time the median call; times are medians over rounds (ms), the speedup the ratio of "
        "the medians; spreads: min, max, quartiles of the round times",
        "timing": rows,
        "memory": memory,
    }
    path = args.out
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.splitext(path)[0] + ".png")
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
    d = [r for r in t if "dense_ms" in r]
    series = [
        (t, "sparse", "o-", "spattn SparseAttention"),
        (d, "dense", "s-", "ORT MultiHeadAttention (dense)"),
    ]
    if any("baseline_ms" in r for r in t):
        series.append((t, "baseline", "x:", "spattn, --baseline-lib build"))
    for rows, key, fmt, label in series:
        med = [r[f"{key}_ms"] for r in rows]
        err = [
            [m - r[f"{key}_ms_spread"]["min"] for m, r in zip(med, rows, strict=True)],
            [r[f"{key}_ms_spread"]["max"] - m for m, r in zip(med, rows, strict=True)],
        ]
        ax1.errorbar([r["length"] for r in rows], med, yerr=err, fmt=fmt, capsize=3, label=label)
    for r in d:
        ax1.annotate(
            f"{r['speedup_vs_dense']:.1f}x",
            (r["length"], r["sparse_ms"]),
            textcoords="offset points",
            xytext=(7, -3),
            ha="left",
            fontsize=8,
        )
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("sequence length")
    ax1.set_ylabel("time (ms)")
    ax1.set_title(
        f"ONNX Runtime CPU, {result['machine']['threads']} threads, 8 heads, D=64, fp32 "
        "(bars: min-max)",
        fontsize=9,
    )
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
