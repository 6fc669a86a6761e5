"""The warp-specialized kernel's two forms on the rows the A/B scripts leave out.

Question answered: on the calls that `ws_pairs_for` (kernels/src/cuda/launch.cu) sends to two key
tiles per stage, is that form at least as fast as one tile per stage? ab_kernels.sh times dense
and the causal window with GQA; this script adds the other long-row calls: decoding without GQA
row stacking (query heads = KV heads, so the warp-specialized kernel runs it: Phi-3's head dim 96
among them), full causal prefill, and the Sparse Transformer's strided pattern. One library,
SPATTN_WS_PAIRS=0 and =1 forced in turn (and unset: the default choice), interleaved over
rounds, CUDA events, warm-up, the median of each round; outputs of the two forms compared.

    python3 benchmarks/pairs_choice.py --out DIR [--D 96 128] [--rounds 3] [--tag T]

Writes DIR/pairs_choice[_T].json (rows, each form's per-round medians, the ratio pairs / one
tile, the max output difference, command, device, library sha256) and .txt (the table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import time_callable  # noqa: E402

from spattn.capi import CudaRunner, load  # noqa: E402

FORMS = ("0", "1", None)  # one tile per stage, two, the default choice


def cases(dims):
    """(name, B, Hq, Hkv, Lq, Lk, D, attrs): long-row calls outside ab_kernels.sh's rows."""
    out = []
    for d in dims:
        for lq in (1, 8):
            name = f"decode MHA Lq={lq} cache 32K causal"
            out.append((name, 16, 32, 32, lq, 32768, d, {"causal": 1}))
            out.append(
                (
                    f"decode MHA Lq={lq} cache 32K causal window 4096",
                    16,
                    32,
                    32,
                    lq,
                    32768,
                    d,
                    {"causal": 1, "window_left": 4095},
                )
            )
        out.append(("prefill causal 16K", 1, 16, 16, 16384, 16384, d, {"causal": 1}))
        out.append(
            (
                "prefill strided 128 + window 127 16K",
                1,
                16,
                16,
                16384,
                16384,
                d,
                {"causal": 1, "window_left": 127, "stride": 128},
            )
        )
    return out


def run(args):
    runner = CudaRunner()
    rows = []
    for name, b, hq, hkv, lq, lk, d, attrs in cases(args.D):
        g = torch.Generator(device="cuda").manual_seed(0)
        dt = torch.bfloat16
        q = torch.randn(b, hq, lq, d, device="cuda", dtype=dt, generator=g)
        k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dt, generator=g)
        v = torch.randn(b, hkv, lk, d, device="cuda", dtype=dt, generator=g)
        outs = {f: torch.empty(b, hq, lq, d, device="cuda", dtype=dt) for f in FORMS}
        times = {f: [] for f in FORMS}
        for r in range(args.rounds):
            order = FORMS if r % 2 == 0 else tuple(reversed(FORMS))
            for f in order:
                if f is None:
                    os.environ.pop("SPATTN_WS_PAIRS", None)
                else:
                    os.environ["SPATTN_WS_PAIRS"] = f
                try:
                    call = runner.prepare(q, k, v, outs[f], attrs)
                    t = time_callable(call, warmup=args.warmup, iters=args.iters)
                finally:
                    os.environ.pop("SPATTN_WS_PAIRS", None)
                times[f].append(t["median_ms"])
        diff = (outs["0"].float() - outs["1"].float()).abs().max().item()
        mean = {f: statistics.mean(times[f]) for f in FORMS}
        row = {
            "case": name,
            "B": b,
            "heads_q": hq,
            "heads_kv": hkv,
            "Lq": lq,
            "Lk": lk,
            "D": d,
            "attrs": attrs,
            "one_tile_ms": times["0"],
            "pairs_ms": times["1"],
            "default_ms": times[None],
            "pairs_over_one_tile": mean["1"] / mean["0"],
            "default_over_one_tile": mean[None] / mean["0"],
            "max_abs_diff_pairs_vs_one_tile": diff,
        }
        rows.append(row)
        print(
            f"{name:48s} D={d:3d} one tile {mean['0']:8.3f} ms  pairs {mean['1']:8.3f} ms "
            f"(x{row['pairs_over_one_tile']:.3f})  default x{row['default_over_one_tile']:.3f}  "
            f"max diff {diff:.3g}",
            flush=True,
        )
        del q, k, v, outs
        torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--D", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = run(args)
    lib = load()._name
    with open(lib, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    base = os.path.join(args.out, "pairs_choice" + (f"_{args.tag}" if args.tag else ""))
    meta = {
        "command": "python3 " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "library": lib,
        "library_sha256": sha,
        "dtype": "bfloat16",
    }
    with open(base + ".json", "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    with open(base + ".txt", "w") as f:
        f.write(f"Device: {meta['device']}; library sha256 {sha[:16]}...\n")
        f.write(f"Command: `{meta['command']}`\n")
        f.write("Mean of the rounds' medians (ms); ratio to one tile per stage ")
        f.write("(SPATTN_WS_PAIRS=0)\n\n")
        f.write("| case | D | one tile | pairs | pairs / one tile | default / one tile ")
        f.write("| max diff |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(
                f"| {r['case']} | {r['D']} | {statistics.mean(r['one_tile_ms']):.3f} | "
                f"{statistics.mean(r['pairs_ms']):.3f} | {r['pairs_over_one_tile']:.3f} | "
                f"{r['default_over_one_tile']:.3f} | {r['max_abs_diff_pairs_vs_one_tile']:.3g} |\n"
            )


if __name__ == "__main__":
    main()
