"""The main job, end to end: a Longformer-style encoder on a long input.

1. Build a PyTorch encoder (nn.TransformerEncoder) and swap its attention for spattn's
   local-window + global-token attention (band +-256, 64 global tokens).
2. Export it to ONNX: one spattn::SparseAttention node per layer, checked by the ONNX checker and
   shape inference, validated against PyTorch through ONNX Runtime and our library.
3. Time it in ONNX Runtime against the same encoder with dense attention (PyTorch's standard ONNX
   export, run by ONNX Runtime's own kernels), same threads, same input.

    python samples/quickstart.py [--seq-len 4096] [--threads 2] [--out out/]

The headline speedup is the median over interleaved (sparse, dense) pairs, with the middle half of
the pairs beside it; how well separate runs agree: benchmarks/bench_demo.py and
benchmarks/results/cpu_demo_speedup_repeatability.json.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import spattn
from spattn import Pattern, convert_transformer, export
from spattn.bench import BenchConfig, run_benchmark
from spattn.runtime import ort_session


def paired_ms(
    a: ort.InferenceSession,
    a_feeds: dict,
    b: ort.InferenceSession,
    b_feeds: dict,
    repeats: int,
    pause_s: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Run times (ms) of two sessions, alternating a, b, a, b...: a slower or faster moment of the
    machine (other processes, frequency) hits both, so each pair's ratio is a fair speedup.

    Each run starts ``pause_s`` after the previous one: a session's thread pool spins a while
    after its run, and a run of the other session that starts beside those threads shares the
    cores with them (up to 1.3x its time on two cores)."""
    a.run(None, a_feeds)  # warm-up
    b.run(None, b_feeds)
    ta, tb = [], []
    for _ in range(repeats):
        for session, feeds, out in ((a, a_feeds, ta), (b, b_feeds, tb)):
            time.sleep(pause_s)
            start = time.perf_counter()
            session.run(None, feeds)
            out.append(1e3 * (time.perf_counter() - start))
    return np.asarray(ta), np.asarray(tb)


def speedup_summary(sparse_ms: np.ndarray, dense_ms: np.ndarray) -> dict:
    """The headline numbers of paired runs: per pair the speedup dense / sparse; their median
    and quartiles (the middle half of the pairs), and the median time of each side."""
    sparse_ms, dense_ms = np.asarray(sparse_ms, float), np.asarray(dense_ms, float)
    if sparse_ms.shape != dense_ms.shape or sparse_ms.ndim != 1 or sparse_ms.size == 0:
        raise ValueError(
            f"sparse_ms, dense_ms: expected two equal non-empty 1-D arrays of paired run times, "
            f"got shapes {sparse_ms.shape} and {dense_ms.shape}"
        )
    ratios = dense_ms / sparse_ms
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {
        "pairs": int(ratios.size),
        "speedup_median": float(median),
        "speedup_q1": float(q1),
        "speedup_q3": float(q3),
        "sparse_ms_median": float(np.median(sparse_ms)),
        "dense_ms_median": float(np.median(dense_ms)),
        "speedups": ratios.tolist(),
    }


def speedup_text(summary: dict, threads: int) -> str:
    """What the demo prints about the paired runs of :func:`speedup_summary`."""
    s = summary
    return "\n".join(
        [
            f"ONNX Runtime CPU, {threads} threads, median of {s['pairs']} paired runs:",
            f"  spattn sparse encoder: {s['sparse_ms_median']:9.1f} ms",
            f"  dense encoder:         {s['dense_ms_median']:9.1f} ms",
            f"  speedup: {s['speedup_median']:.2f}x (middle half of the paired runs: "
            f"{s['speedup_q1']:.2f}x to {s['speedup_q3']:.2f}x; whole encoder: projections and "
            "MLP included)",
        ]
    )


def time_encoders(sparse_path: str, dense_path: str, x: np.ndarray, threads: int, repeats: int):
    """Fresh sessions of both encoders, then :func:`paired_ms`; returns (sparse, dense) ms."""
    sparse_session = ort_session(sparse_path, intra_op_threads=threads)
    feeds = {sparse_session.get_inputs()[0].name: x}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    dense_session = ort.InferenceSession(dense_path, opts, providers=["CPUExecutionProvider"])
    dense_feeds = {dense_session.get_inputs()[0].name: x}
    return paired_ms(sparse_session, feeds, dense_session, dense_feeds, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats",
        type=int,
        default=15,
        help="paired runs (sparse, dense) timed; the speedup is their median, with its spread",
    )
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # exporter chatter
    warnings.filterwarnings("ignore", category=FutureWarning)

    pattern = Pattern.longformer(attention_window=512, num_global=64)  # band +-256, 64 global
    layer = nn.TransformerEncoderLayer(
        args.d_model, args.heads, dim_feedforward=2 * args.d_model, dropout=0.0, batch_first=True
    )
    dense = nn.TransformerEncoder(layer, args.layers, enable_nested_tensor=False).eval()
    sparse = convert_transformer(copy.deepcopy(dense), pattern).eval()
    x = torch.randn(1, args.seq_len, args.d_model)
    print(
        f"spattn {spattn.__version__}: {args.layers}-layer encoder, d_model {args.d_model}, "
        f"{args.heads} heads, L = {args.seq_len}, pattern: {pattern.describe()}, "
        f"density {pattern.density(args.seq_len):.2%}"
    )

    # Export and validate: one fused node per attention, checked, compared with PyTorch.
    sparse_path = os.path.join(args.out, "longformer_encoder.onnx")
    start = time.perf_counter()
    report = export(sparse, (x,), sparse_path, intra_op_threads=args.threads)
    print(
        f"exported {sparse_path} in {time.perf_counter() - start:.1f} s: "
        f"{report.num_spattn_nodes} spattn::SparseAttention nodes"
    )
    for name, (abs_err, rel_err) in report.errors.items():
        print(
            f"  numerical check vs PyTorch, output {name}: max abs error {abs_err:.2e}, "
            f"max rel error {rel_err:.2e}"
        )
    print(
        f"  validation: {'PASSED' if report.passed else 'FAILED'}: |onnxruntime - pytorch| <= "
        f"{report.atol:g} + {report.rtol:g} * |pytorch| is the rule, element by element"
    )

    # The dense alternative: PyTorch's own ONNX export, run by ONNX Runtime's kernels.
    dense_path = os.path.join(args.out, "dense_encoder.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(dense, (x,), dynamo=True, verbose=False)
    program.save(dense_path)

    sparse_t, dense_t = time_encoders(
        sparse_path, dense_path, x.numpy(), args.threads, args.repeats
    )
    print(speedup_text(speedup_summary(sparse_t, dense_t), args.threads))

    # The attention alone: our op against ONNX Runtime's fused dense MultiHeadAttention.
    cfg = BenchConfig(
        lengths=(args.seq_len,),
        heads=args.heads,
        kv_heads=args.heads,
        head_dim=args.d_model // args.heads,
        attributes=pattern.attributes(),
        threads=args.threads,
        repeat=args.repeats,
        dense_max=args.seq_len,
        memory=False,
    )
    times = run_benchmark(cfg, device="cpu")["rows"][0]["times_ms"]
    op_ms, mha_ms = times["spattn-ort-cpu"], times["dense-ort-cpu"]
    print(
        f"  attention alone ({args.heads} heads, D={cfg.head_dim}): spattn {op_ms:.1f} ms, "
        f"ONNX Runtime MultiHeadAttention {mha_ms:.1f} ms: {mha_ms / op_ms:.1f}x"
    )
    if not report.passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
