"""Sample 3: a causal sliding-window GQA decoder block, exported and run on CPU and on CUDA.

1. Build a pre-norm decoder block whose attention is grouped-query (8 query heads over 2
   key/value heads) with a Hugging Face style causal sliding window, and right-padded batches
   given as key_lengths.
2. Export it: one spattn::SparseAttention node, validated against PyTorch on the CPU.
3. Run it with ONNX Runtime on the CPU and, when onnxruntime-gpu and spattn's CUDA build are
   present, on the CUDA execution provider; compare both with PyTorch and time them.

    python samples/decoder_gqa.py [--seq-len 1024] [--window 256] [--out out/]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import spattn
from spattn.models import gqa_decoder_block
from spattn.runners import backend_status
from spattn.runtime import ort_session
from spattn.tolerances import tolerance


def timed_runs(session, feeds: dict, repeats: int) -> tuple[list, float]:
    """Outputs of one run and the median time (ms) of ``repeats`` runs after a warm-up."""
    outputs = session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return outputs, 1e3 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--d-model",
        type=int,
        default=512,
        help="with --heads 8: head dim 64, which the CUDA kernels support",
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument(
        "--window",
        type=int,
        default=256,
        help="keys per query, the query included (Hugging Face sliding_window)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)

    model, (x, key_lengths) = gqa_decoder_block(
        d_model=args.d_model,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        window=args.window,
        seq_len=args.seq_len,
        batch=args.batch,
    )
    print(
        f"GQA decoder block: d_model {args.d_model}, {args.heads} query heads over "
        f"{args.kv_heads} key/value heads, causal sliding window of {args.window} keys, "
        f"L = {args.seq_len}, key_lengths {key_lengths.tolist()}"
    )

    path = os.path.join(args.out, "decoder_gqa.onnx")
    report = spattn.export(model, (x, key_lengths), path, intra_op_threads=args.threads)
    print(report.summary())
    if not report.passed:
        print("error: the exported model differs from PyTorch beyond the tolerances")
        return 1

    with torch.no_grad():
        expected = model(x, key_lengths).numpy()
    feeds = None
    atol, rtol = tolerance("float32")
    failed = False
    providers = {"CPU": ["CPUExecutionProvider"]}
    cuda_ok, cuda_why = backend_status("ort-cuda")
    if cuda_ok:
        providers["CUDA"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        print(f"CUDA: not run here ({cuda_why}); running on the CPU only")
    for device, prov in providers.items():
        session = ort_session(path, providers=prov, intra_op_threads=args.threads)
        if device == "CUDA" and session.get_providers()[0] != "CUDAExecutionProvider":
            print("CUDA: ONNX Runtime could not start its CUDA provider; skipped")
            continue
        names = [i.name for i in session.get_inputs()]
        feeds = dict(zip(names, (x.numpy(), key_lengths.numpy()), strict=True))
        (got,), ms = timed_runs(session, feeds, args.repeats)
        err = np.abs(got - expected)
        ok = bool(np.all(err <= atol + rtol * np.abs(expected)))
        failed |= not ok
        print(
            f"ONNX Runtime {device}: max abs error vs PyTorch {err.max():.2e} "
            f"({'PASSED' if ok else 'FAILED'}), median {ms:.2f} ms over {args.repeats} runs"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
