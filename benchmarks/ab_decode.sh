#!/bin/bash
# A-B comparison of builds of libspattn_kernels.so on decode steps, on one GPU, in one session.
#
# Question answered: does a kernel change make the decode rows of bench_hopper.py (B = 16, GQA
# 32:8, D = 128, bfloat16, Lq = 1 and 8, caches of 32K and 128K, causal window 4096 and full
# causal; spattn only, timed as CUDA-graph replays) faster, run interleaved so that clocks and
# drift hit every build alike? Builds lie compressed in $AB_DIR/<name>/libspattn_kernels.so.xz
# (git-ignored), as for ab_kernels.sh; ROUNDS rounds (default 2) run every build in the order
# given, reversed every second round. Each run also checks the CUDA-graph replay against the
# eager call (bench_hopper.py). SPATTN_CUDA_KERNEL, when set, passes through to every run;
# AB_DECODE_D=96 (any head dim of the op) runs the same rows at that head dim.
#
#     AB_DIR=.gpu/ab2 OUT=/tmp/abd bash benchmarks/ab_decode.sh main fold
#
# Writes into $OUT: ab_decode.txt (median µs per row and build, the mean of the rounds' medians,
# the ratio to the first build, and the K/V bandwidth), ab_decode.json (the same with every run's
# rows, command and device); with AB_TAG=x, ab_decode_x.txt and .json.
set -euo pipefail

OUT=${OUT:-$PWD/ab_out}
AB=${AB_DIR:-.gpu/ab}
ROUNDS=${ROUNDS:-2}
export PYTHONPATH=$PWD/exporter:$PWD${PYTHONPATH:+:$PYTHONPATH}
[ $# -gt 0 ] || { sed -n '2,15p' "$0"; exit 2; }
mkdir -p "$OUT"
export AB_TAG=${AB_TAG:+_$AB_TAG}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for n in "$@"; do
  mkdir -p "$WORK/lib/$n"
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$AB/$n/libspattn_kernels.so.xz" "$WORK/lib/$n/libspattn_kernels.so"
  echo "$n $(sha256sum < "$WORK/lib/$n/libspattn_kernels.so" | cut -c1-16)"
done

for r in $(seq 1 "$ROUNDS"); do
  # Odd rounds in the order given, even rounds reversed (A B, B A, ...): a drift over the run
  # then favours no build.
  order=("$@")
  [ $((r % 2)) -eq 0 ] && order=($(printf "%s\n" "${order[@]}" | tac))
  for n in "${order[@]}"; do
    echo "== round $r: $n"
    SPATTN_KERNELS_LIB="$WORK/lib/$n/libspattn_kernels.so" timeout 200 python3 benchmarks/bench_hopper.py \
      --plan full --only decode_window4096 decode_causal --skip-anchors fa4 --fa4-workers 0 \
      ${AB_DECODE_D:+--decode-d $AB_DECODE_D} --budget-s 150 --out "$WORK/runs" --tag "${n}_$r" > "$WORK/${n}_$r.log" 2>&1 ||
      { echo "run $n $r failed"; tail -n 5 "$WORK/${n}_$r.log"; }
  done
done

python3 - "$WORK/runs" "$OUT" "$@" <<'PY'
import json
import os
import statistics
import sys

runs_dir, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
runs, times, bw = {}, {}, {}
for name in names:
    for f in sorted(os.listdir(runs_dir)):
        if not (f.startswith(f"hopper_{name}_") and f.endswith(".json")):
            continue
        tag = f[len("hopper_") : -len(".json")]
        if tag.rsplit("_", 1)[0] != name:
            continue
        with open(os.path.join(runs_dir, f)) as fh:
            data = json.load(fh)
        runs[tag] = data
        for row in data["rows"]:
            ms = row.get("impl", {}).get("spattn", {}).get("median_ms")
            if ms is None:
                continue
            times.setdefault(row["id"], {}).setdefault(name, []).append(ms * 1000)
            bw.setdefault(row["id"], {}).setdefault(name, []).append(row["bandwidth"]["fraction"])
base = names[0]
lines = [
    f"kernel {os.environ.get('SPATTN_CUDA_KERNEL', 'default')}: median µs (mean of the rounds' "
    f"medians), ratio to {base}, fraction of 4.8 TB/s on K/V"
]
table = []
for rid in times:
    per = times[rid]
    ref = statistics.mean(per[base]) if base in per else None
    cells, row = [], {"row": rid}
    for n in names:
        if n not in per:
            cells.append(f"{n}: -")
            continue
        us = statistics.mean(per[n])
        frac = statistics.mean(bw[rid][n])
        row[n] = {"us": us, "rounds_us": per[n], "bandwidth_fraction": frac}
        if ref:
            row[n][f"vs_{base}"] = us / ref
        cells.append(f"{n}: {us:8.1f} ({us / ref if ref else float('nan'):.3f}x, {frac:.0%})")
    table.append(row)
    lines.append(f"{rid:44s} " + "  ".join(cells))
text = "\n".join(lines)
print(text)
with open(os.path.join(out, f"ab_decode{os.environ.get('AB_TAG', '')}.txt"), "w") as fh:
    fh.write(text + "\n")
with open(os.path.join(out, f"ab_decode{os.environ.get('AB_TAG', '')}.json"), "w") as fh:
    kernel = os.environ.get("SPATTN_CUDA_KERNEL", "default")
    json.dump({"builds": names, "kernel": kernel, "table": table, "runs": runs}, fh, indent=1)
PY
