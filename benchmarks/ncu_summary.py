"""Summarizes an Nsight Compute source export (benchmarks/profile_ncu.sh, *_src.csv.gz).

Prints the executed warp instructions and stall samples of the kernel, and for the
warp-specialized kernel split at its producer's setmaxnreg.dec (the code after it is the
producer's), the source lines with the most instructions (or stall samples) per region, each with
its two most frequent stall reasons.

    python benchmarks/ncu_summary.py \
        benchmarks/results/ncu/ws_sliding_L16K_D128_8d51be6_src.csv.gz [--top 15] [--sort samples]
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip


def read_sass(path: str) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """(header, [(address, source line, row)]) of every SASS row, in address order."""
    header: list[str] = []
    rows = []
    src_file, src_line = "", ""
    with gzip.open(path, "rt") as f:
        for r in csv.reader(f):
            if len(r) == 2:
                if r[0] == "File Path":
                    src_file = r[1].split("/")[-1]
                continue
            if r and r[0] == "Line No":
                header = r
                continue
            if not header:
                continue
            if r[0]:
                src_line = f"{src_file}:{r[0]} {r[1].strip()[:70]}"
            elif r[2].startswith("0x"):
                rows.append((int(r[2], 16), src_line, r))
    # A SASS row can be listed under several inlined source lines: keep its first listing.
    seen, unique = set(), []
    for a, s, r in sorted(rows, key=lambda x: x[0]):
        if a not in seen:
            seen.add(a)
            unique.append((a, s, r))
    return header, unique


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--sort", choices=("inst", "samples"), default="inst")
    args = ap.parse_args()
    header, sass = read_sass(args.path)
    ic = header.index("Instructions Executed")
    sc = header.index("Warp Stall Sampling (All Samples)")
    # Per-reason sample columns (all samples, not only the not-issued ones).
    reasons = [
        (i, h[len("stall_") :])
        for i, h in enumerate(header)
        if h.startswith("stall_") and "(Not Issued)" not in h
    ]
    split = next((i for i, (_, _, r) in enumerate(sass) if "SETMAXREG.DEALLOC" in r[3]), None)
    regions = (
        {"kernel": sass}
        if split is None
        else {"consumers (and entry)": sass[:split], "producer": sass[split:]}
    )

    def num(r: list[str], c: int) -> float:
        return float(r[c] or 0)

    total_i = sum(num(r, ic) for _, _, r in sass)
    total_s = sum(num(r, sc) for _, _, r in sass)
    print(f"{args.path}: {total_i:,.0f} warp instructions, {total_s:,.0f} stall samples")
    for name, rows in regions.items():
        ins = sum(num(r, ic) for _, _, r in rows)
        smp = sum(num(r, sc) for _, _, r in rows)
        print(
            f"\n{name}: {ins:,.0f} instructions ({100 * ins / total_i:.0f}%), "
            f"{100 * smp / max(total_s, 1):.0f}% of samples"
        )
        by_line: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        why: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for _, line, r in rows:
            by_line[line][0] += num(r, ic)
            by_line[line][1] += num(r, sc)
            for c, name in reasons:
                why[line][name] += num(r, c)
        key = 0 if args.sort == "inst" else 1
        for line, (i, s) in sorted(by_line.items(), key=lambda x: -x[1][key])[: args.top]:
            top = ", ".join(
                f"{n} {100 * v / max(s, 1):.0f}%" for n, v in why[line].most_common(2) if v
            )
            print(
                f"  {100 * i / max(ins, 1):5.1f}% inst {100 * s / max(smp, 1):5.1f}% samples  "
                f"{line}" + (f"  [{top}]" if top else "")
            )


if __name__ == "__main__":
    main()
