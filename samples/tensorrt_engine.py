"""Sample 4: build a TensorRT engine with the spattn plugin, run it, compare with ONNX Runtime.

Needs an NVIDIA GPU, TensorRT (`pip install tensorrt-cu13`, or `tensorrt-cu12` for CUDA 12) and
spattn built with CUDA and TensorRT (libspattn_trt.so). Without them it says what is missing and
exits with status 1.

    python samples/tensorrt_engine.py [MODEL.onnx] [--seq-len 2048] [--out out/]

Without MODEL.onnx, the Longformer-style sample encoder is exported first.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from spattn import runners
from spattn.compare import compare_outputs
from spattn.feeds import make_feeds
from spattn.modelio import input_specs, load_onnx, model_float_dtype
from spattn.text import format_table
from spattn.tolerances import tolerance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="ONNX model (default: export the sample)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--max-seq-len", type=int, default=8192)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()

    ok, reason = runners.tensorrt_status()
    if not ok:  # before any work: one line saying what is missing and how to get it
        print(f"error: {reason}", file=sys.stderr)
        return 1
    from spattn import trt

    os.makedirs(args.out, exist_ok=True)
    path = args.model
    if path is None:
        import spattn
        from spattn.models import longformer_encoder

        model, inputs = longformer_encoder(seq_len=args.seq_len, batch=args.batch)
        path = os.path.join(args.out, "longformer_encoder.onnx")
        report = spattn.export(model, inputs, path)
        print(report.summary())

    proto = load_onnx(path)
    specs = input_specs(proto)
    feeds = make_feeds(specs, batch=args.batch, seq_len=args.seq_len)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    profile = [
        make_feeds(specs, batch=b, seq_len=n)
        for b, n in (
            (1, 1),
            (args.batch, args.seq_len),
            (args.batch, max(args.seq_len, args.max_seq_len)),
        )
    ]
    engine = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".plan")
    trt.build_engine(
        path,
        engine,
        min_shapes={k: v.shape for k, v in profile[0].items()},
        opt_shapes=shapes,
        max_shapes={k: v.shape for k, v in profile[2].items()},
    )
    print(f"built {engine}")

    got = runners.run_tensorrt(engine, specs, feeds)
    ref = runners.run_backend("ort-cpu", path, specs, feeds)
    atol, rtol = tolerance(model_float_dtype(proto))
    rows = compare_outputs(ref, got, atol, rtol)
    print(
        format_table(
            ["output", "max abs err", "max rel err", "status"],
            [
                [
                    r["output"],
                    f"{r['max_abs']:.3g}",
                    f"{r['max_rel']:.3g}",
                    "PASSED" if r["passed"] else "FAILED",
                ]
                for r in rows
            ],
        )
    )
    passed = all(r["passed"] for r in rows)
    print("TensorRT vs ONNX Runtime CPU:", "PASSED" if passed else "FAILED")
    np.savez(os.path.join(args.out, "tensorrt_outputs.npz"), **got)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
