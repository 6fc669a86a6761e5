"""The warp-specialized kernel's forms on the rows the A/B scripts leave out.

Question answered: on the calls that `ws_pairs_for` (kernels/src/cuda/launch.cu) sends to two key
tiles per stage, is that form at least as fast as one tile per stage, and on the calls it keeps
on one tile, would two be faster? ab_kernels.sh times dense and the causal window with GQA;
``--cases long`` (the default) adds the other long-row calls: decoding without GQA row stacking
(query heads = KV heads, so the warp-specialized kernel runs it: Phi-3's head dim 96 among them),
full causal prefill, and the Sparse Transformer's strided pattern. ``--cases band`` times the
short rows the choice keeps on one tile per stage (`narrow_rows`): ±256 at 16K and 64K, ±256 +
64 global tokens and a causal window of 1024 at 16K (at head dim 64, ±256 + 64 global runs the
one-warpgroup kernel whatever the forms: a control of the run's noise). One library, the forms
forced in turn through the environment (SPATTN_WS_PAIRS=0, =1; at head dims up to 64 also =1
with two consumer warpgroups, SPATTN_WS_PARTS=2, since pairs there bring three; and unset: the
default choice), interleaved over rounds, CUDA events, warm-up, the median of each round;
outputs of the forms compared with one tile per stage's.

    python3 benchmarks/pairs_choice.py --out DIR [--D 96 128] [--cases long|band] [--rounds 3]
        [--tag T]

Writes DIR/pairs_choice[_T].json (rows, each form's per-round medians, the ratio of each form to
one tile, the max output difference, command, device, library sha256) and .txt (the table).
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

from spattn.bench import require_cuda  # noqa: E402
from spattn.capi import CudaRunner, load  # noqa: E402

# Form name -> the environment it forces (docs/op-spec.md names both variables).
FORMS = {
    "one tile": {"SPATTN_WS_PAIRS": "0"},
    "pairs": {"SPATTN_WS_PAIRS": "1"},
    "pairs, 2 consumers": {"SPATTN_WS_PAIRS": "1", "SPATTN_WS_PARTS": "2"},
    "default": {},
}
_ENV = ("SPATTN_WS_PAIRS", "SPATTN_WS_PARTS")


def forms_for(d):
    """The forms that differ at head dim d (two consumers with pairs: tile width 64 only)."""
    return [f for f in FORMS if f != "pairs, 2 consumers" or d <= 64]


def band_cases(dims):
    """Short rows (narrow_rows), which the choice keeps on one tile per stage."""
    out = []
    for d in dims:
        for lk in (16384, 65536):
            band = {"window_left": 256, "window_right": 256}
            out.append((f"prefill ±256 {lk // 1024}K", 1, 16, 16, lk, lk, d, band))
        glob = {"window_left": 256, "window_right": 256, "num_global": 64}
        out.append(("prefill ±256 + 64 global 16K", 1, 16, 16, 16384, 16384, d, glob))
        win = {"causal": 1, "window_left": 1023}
        out.append(("prefill causal window 1024 16K", 1, 16, 16, 16384, 16384, d, win))
    return out


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


def make_row(case, times, diffs):
    """One case's result: each form's per-round medians (ms), the ratio of the mean of a form's
    medians to one tile per stage's, and each form's max output difference to one tile's."""
    name, b, hq, hkv, lq, lk, d, attrs = case
    mean = {f: statistics.mean(t) for f, t in times.items()}
    return {
        "case": name,
        "B": b,
        "heads_q": hq,
        "heads_kv": hkv,
        "Lq": lq,
        "Lk": lk,
        "D": d,
        "attrs": attrs,
        "forms_ms": times,
        "over_one_tile": {f: mean[f] / mean["one tile"] for f in times},
        "max_abs_diff_vs_one_tile": diffs,
    }


def run(args):
    runner = CudaRunner()
    rows = []
    plan = cases(args.D) if args.cases == "long" else band_cases(args.D)
    for name, b, hq, hkv, lq, lk, d, attrs in plan:
        g = torch.Generator(device="cuda").manual_seed(0)
        dt = torch.bfloat16
        q = torch.randn(b, hq, lq, d, device="cuda", dtype=dt, generator=g)
        k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dt, generator=g)
        v = torch.randn(b, hkv, lk, d, device="cuda", dtype=dt, generator=g)
        forms = forms_for(d)
        outs = {f: torch.empty(b, hq, lq, d, device="cuda", dtype=dt) for f in forms}
        times: dict = {f: [] for f in forms}
        for r in range(args.rounds):
            order = forms if r % 2 == 0 else list(reversed(forms))
            for f in order:
                os.environ.update(FORMS[f])
                try:
                    call = runner.prepare(q, k, v, outs[f], attrs)
                    t = time_callable(call, warmup=args.warmup, iters=args.iters)
                finally:
                    for e in _ENV:
                        os.environ.pop(e, None)
                times[f].append(t["median_ms"])
        one = outs["one tile"].float()
        diffs = {f: (outs[f].float() - one).abs().max().item() for f in forms}
        row = make_row((name, b, hq, hkv, lq, lk, d, attrs), times, diffs)
        rows.append(row)
        ratios = "  ".join(f"{f} x{row['over_one_tile'][f]:.3f}" for f in forms[1:])
        print(
            f"{name:40s} D={d:3d} one tile {statistics.mean(times['one tile']):8.3f} ms  {ratios}  "
            f"max diff {max(diffs.values()):.3g}",
            flush=True,
        )
        del q, k, v, outs
        torch.cuda.empty_cache()
    return rows


def table(meta, rows):
    """The text summary: one line per case, each form's ratio to one tile per stage."""
    names = list(FORMS)
    out = [
        f"Device: {meta['device']}; library sha256 {meta['library_sha256'][:16]}...",
        f"Command: `{meta['command']}`",
        "Mean of the rounds' medians (ms); each form's ratio to one tile per stage "
        "(SPATTN_WS_PAIRS=0); a blank: the form is the same kernel at that head dim",
        "",
        "| case | D | one tile ms | "
        + " | ".join(n + " / one tile" for n in names[1:])
        + " | max diff |",
        "|" + "---|" * (len(names) + 3),
    ]
    for r in rows:
        ratio = r["over_one_tile"]
        cells = [f"{ratio[n]:.3f}" if n in ratio else "" for n in names]
        out.append(
            f"| {r['case']} | {r['D']} | {statistics.mean(r['forms_ms']['one tile']):.3f} | "
            + " | ".join(cells[1:])
            + f" | {max(r['max_abs_diff_vs_one_tile'].values()):.3g} |"
        )
    return "\n".join(out) + "\n"


def write(base, meta, rows):
    """base.json (meta and rows) and base.txt (table)."""
    with open(base + ".json", "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    with open(base + ".txt", "w") as f:
        f.write(table(meta, rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--D", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--cases", choices=["long", "band"], default="long")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag")
    args = ap.parse_args()
    require_cuda("pairs_choice.py")
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
    write(base, meta, rows)


if __name__ == "__main__":
    main()
