"""One table and one plot from several bench_cuda.py result files.

Question answered: across lengths, head dims and dtypes, how does the CUDA kernel compare with
every alternative that bench_cuda.py timed beside it (FlexAttention, dense SDPA, ONNX Runtime's
CUDA EP and MultiHeadAttention)? Each row comes from one file, so every ratio in a row is a
same-run ratio; the file (and its command) is named in the row.

    python3 benchmarks/summarize_cuda.py benchmarks/results/cuda_h100_L*.json \
        --md benchmarks/results/cuda_h100_vs_alternatives.md \
        --plot benchmarks/results/cuda_h100_vs_alternatives.png

With no file named, it reads the H100 runs in benchmarks/results/ (cuda_h100_L*.json; earlier
runs are in results/archive/ and are not read).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["sliding256", "sliding256_global64", "bigbird", "causal_window4096_gqa", "dense"]
SHORT = {
    "sliding256": "sliding ±256",
    "sliding256_global64": "±256 + 64 global",
    "bigbird": "BigBird-like",
    "causal_window4096_gqa": "causal window 4096, GQA 32:8",
    "dense": "dense",
}
# The H100 targets of the speed against FlexAttention (bf16).
FLEX_TARGETS = {"sliding256": 1.3, "sliding256_global64": 3.0, "bigbird": 4.0}


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for r in data["results"]:
            r["file"] = os.path.basename(path)
            rows.append(r)
    rows.sort(
        key=lambda r: (
            ORDER.index(r["key"]) if r["key"] in ORDER else 99,
            r["D"],
            r["L"],
            r["dtype"],
        )
    )
    return rows


def ms(impl, name):
    t = impl.get(name, {})
    return t.get("median_ms")


def fmt(x, spec=".3f"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ratio(a, b):
    return None if a is None or b is None else a / b


def markdown(rows) -> str:
    head = (
        "| pattern | L | D | dtype | spattn ms (TF/s) | FlexAttention ms | vs Flex "
        "| dense SDPA cuDNN / FA2 ms | via ORT CUDA EP ms, per call | ORT / direct, streamed "
        "| ORT MultiHeadAttention ms | file |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        im = r["impl"]
        ours = ms(im, "spattn")
        sdpa = " / ".join(fmt(ms(im, n)) for n in ("sdpa_cudnn", "sdpa_flash2") if ms(im, n))
        vs_flex = fmt(ratio(ms(im, "flex"), ours), ".2f")
        lines.append(
            f"| {SHORT.get(r['key'], r['pattern'])} | {r['L'] // 1024}K | {r['D']} | {r['dtype']} "
            f"| {fmt(ours)} ({im['spattn']['tflops']:.0f}) | {fmt(ms(im, 'flex'))} "
            f"| {vs_flex + 'x' if vs_flex else ''} | {sdpa} | {fmt(ms(im, 'spattn_ort'))} "
            f"| {fmt(r.get('ort_over_direct_streamed'))} | {fmt(ms(im, 'ort_mha'))} "
            f"| {r['file']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4), squeeze=False)
    for ax, d in zip(axes[0], dims, strict=True):
        for key in ORDER:
            sel = sorted(
                (
                    r
                    for r in rows
                    if r["key"] == key
                    and r["D"] == d
                    and r["dtype"] == "bfloat16"
                    and ms(r["impl"], "flex")
                ),
                key=lambda r: r["L"],
            )
            if not sel:
                continue
            xs = [r["L"] for r in sel]
            ys = [ms(r["impl"], "flex") / ms(r["impl"], "spattn") for r in sel]
            line = ax.plot(xs, ys, marker="o", label=SHORT[key])[0]
            if key in FLEX_TARGETS:
                ax.axhline(FLEX_TARGETS[key], color=line.get_color(), ls=":", lw=1)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("L")
        ax.set_ylabel("speed vs FlexAttention (x), same run")
        ax.set_title(f"bf16, D = {d} (dotted: targets)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = sorted(glob.glob(os.path.join(HERE, "results", "cuda_h100_L*.json")))
    ap.add_argument("files", nargs="*", default=default)
    ap.add_argument("--md", help="write the table here (default: print it)")
    ap.add_argument("--plot", help="write the plot here")
    args = ap.parse_args(argv)
    rows = load(args.files)
    table = markdown(rows)
    if args.md:
        with open(args.md, "w") as f:
            f.write("# CUDA kernel and every alternative, same run per row\n\n")
            f.write(
                "Generated by `python3 benchmarks/summarize_cuda.py` from the files named in the "
                "last column (each holds its command and device). H100, B = 1, 16 query heads; "
                "median of 20 calls after warm-up, CUDA events. TF/s: effective, allowed pairs "
                "only. *ORT / direct, streamed*: 50 calls back to back through ONNX Runtime's "
                "CUDA EP over the same calls launched directly (float16 rows).\n\n"
            )
            f.write(table)
    else:
        print(table)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
