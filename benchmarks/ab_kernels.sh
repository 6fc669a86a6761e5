#!/bin/bash
# A-B comparison of builds of libspattn_kernels.so on one GPU, in one session.
#
# Question answered: is a kernel change faster than the controls on the same machine, run
# interleaved so that clocks and drift hit every build alike? Each build lies compressed in
# .gpu/ab/<name>/libspattn_kernels.so.xz (git-ignored). Per round, every build runs
# benchmarks/bench_cuda.py once (SPATTN_KERNELS_LIB pointing at it) in the order given, two rounds:
# A B C, then C B A, ... Rows: causal window 4096 with GQA 32:8, dense, ±256 and ±256 + 64 global at
# L = 16K, D = 64 and 128, bfloat16, no FlexAttention/SDPA columns. Before the timing, each
# build computes a few outputs (finite inputs, a +inf score, NaN values behind key_lengths) that
# are compared with the `main` build's, so a fast but wrong build shows up in the summary.
#
#     OUT=/tmp/ab bash benchmarks/ab_kernels.sh               # every build under .gpu/ab
#     OUT=/tmp/ab bash benchmarks/ab_kernels.sh old main nansel
#     AB_DIR=.gpu/ab2 BASE=main REF=main OUT=/tmp/ab bash benchmarks/ab_kernels.sh main fold
#
# BASE (default old): the build the ratios are taken against; REF (default main): the build whose
# outputs the others' are checked against. AB_D (default "64 128") and AB_PATTERNS (default the
# four patterns above; any of bench_cuda.py's) choose other rows, e.g. AB_D="96 128" AB_PATTERNS=
# "dense causal_window4096_gqa sliding256 bigbird" for a head-dim change.
#
# Needs python3 with torch on a CUDA machine; run from the repository root. Writes into $OUT:
# ab_summary.txt (the table: median ms of each build per row, the mean of the rounds' medians,
# and the ratio to the BASE build), ab_summary.json (the same, the check results, the per-run
# results with their commands and device) and ab_runs.tar.gz (each run's bench_cuda.py JSON).
set -euo pipefail

OUT=${OUT:-$PWD/ab_out}
AB=${AB_DIR:-.gpu/ab}
ROUNDS=${ROUNDS:-2}
export AB_D=${AB_D:-64 128}
AB_PATTERNS=${AB_PATTERNS:-causal_window4096_gqa dense sliding256 sliding256_global64}
export AB_BASE=${BASE:-old} AB_REF=${REF:-main}
export PYTHONPATH=$PWD/exporter:$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ $# -gt 0 ]; then
  names=("$@")
else
  # The controls first (old, main), then the others in name order.
  names=()
  for n in old main; do [ -f "$AB/$n/libspattn_kernels.so.xz" ] && names+=("$n"); done
  for d in "$AB"/*/; do
    n=$(basename "$d")
    [ "$n" = old ] || [ "$n" = main ] || names+=("$n")
  done
fi
[ ${#names[@]} -gt 0 ] || { echo "no builds under $AB" >&2; exit 1; }

for n in "${names[@]}"; do
  mkdir -p "$WORK/lib/$n"
  if command -v xz > /dev/null; then
    xz -dc "$AB/$n/libspattn_kernels.so.xz" > "$WORK/lib/$n/libspattn_kernels.so"
  else  # Python's lzma reads the same format
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$AB/$n/libspattn_kernels.so.xz" "$WORK/lib/$n/libspattn_kernels.so"
  fi
  echo "$n $(sha256sum < "$WORK/lib/$n/libspattn_kernels.so" | cut -c1-16)"
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader || true

# Outputs of each build on a few small cases (saved for the comparison in the summary).
mkdir -p "$WORK/check"
for n in "${names[@]}"; do
  SPATTN_KERNELS_LIB="$WORK/lib/$n/libspattn_kernels.so" timeout 120 python3 - "$WORK/check/$n.pt" <<'EOF' ||
import os
import sys

import torch

from spattn.capi import CudaRunner

dev = "cuda"
runner = CudaRunner()
outs = {}


def run(name, q, k, v, attrs, key_lengths=None):
    out = torch.empty(q.shape[:3] + (v.shape[3],), device=dev, dtype=q.dtype)
    try:
        runner.prepare(q, k, v, out, attrs, key_lengths)()
        torch.cuda.synchronize()
        outs[name] = out.float().cpu()
    except Exception as ex:  # reported in the summary, not fatal
        outs[name] = f"{type(ex).__name__}: {ex}"


g = torch.Generator(device=dev).manual_seed(1)


def rnd(*shape):
    return torch.randn(*shape, device=dev, dtype=torch.bfloat16, generator=g)


for D in map(int, os.environ["AB_D"].split()):
    q, k, v = rnd(1, 32, 4096, D), rnd(1, 8, 4096, D), rnd(1, 8, 4096, D)
    run(f"causal_window4096_gqa_L4K_D{D}", q, k, v, dict(causal=1, window_left=4095))
    q, k, v = rnd(1, 4, 2048, D), rnd(1, 4, 2048, D), rnd(1, 4, 2048, D)
    run(f"dense_L2K_D{D}", q, k, v, {})
    run(f"band256_global64_L2K_D{D}", q, k, v, dict(window_left=256, window_right=256, num_global=64))
    # A +inf score: key 100's K row overflows every q.k of positive queries (rows that see it: NaN).
    qi, ki = q.abs(), k.clone()
    ki[:, :, 100, :] = 1e38
    run(f"inf_score_band256_L2K_D{D}", qi, ki, v, dict(window_left=256, window_right=256))
    # NaN values behind key_lengths: padding keys contribute nothing (output finite).
    vn = v.clone()
    vn[:, :, 1000:, :] = float("nan")
    kl = torch.tensor([1000], dtype=torch.int32, device=dev)
    run(f"nan_padding_band256_L2K_D{D}", q, k, vn, dict(window_left=256, window_right=256), kl)
torch.save(outs, sys.argv[1])
EOF
    echo "check of $n failed"
done

mkdir -p "$WORK/runs" "$WORK/tmp"
for r in $(seq 1 "$ROUNDS"); do
  # Odd rounds in the order given, even rounds reversed (A B, B A, ...): a drift over the run
  # then favours no build.
  order=("${names[@]}")
  [ $((r % 2)) -eq 0 ] && order=($(printf "%s\n" "${order[@]}" | tac))
  for n in "${order[@]}"; do
    echo "== round $r: $n"
    SPATTN_KERNELS_LIB="$WORK/lib/$n/libspattn_kernels.so" timeout 150 python3 benchmarks/bench_cuda.py \
      --L 16384 --D $AB_D --dtypes bfloat16 \
      --patterns $AB_PATTERNS \
      --no-flex --no-sdpa --warmup 5 --iters 20 --out "$WORK/tmp" --tag "ab_${n}_$r" ||
      echo "run $n $r failed"
    [ -f "$WORK/tmp/cuda_ab_${n}_$r.json" ] && mv "$WORK/tmp/cuda_ab_${n}_$r.json" "$WORK/runs/ab_${n}_$r.json"
  done
done
tar -czf "$OUT/ab_runs.tar.gz" -C "$WORK/runs" .

python3 - "$WORK" "$OUT" "${names[@]}" <<'EOF'
import glob
import json
import os
import statistics
import sys

import torch

work, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
runs, times = {}, {}  # times[(key, D)][name] = [median_ms per round]
for path in sorted(glob.glob(os.path.join(work, "runs", "ab_*.json"))):
    tag = os.path.basename(path)[3:-5]
    name, rnd = tag.rsplit("_", 1)
    with open(path) as f:
        data = json.load(f)
    runs[tag] = data
    for row in data["results"]:
        ms = row["impl"].get("spattn", {}).get("median_ms")
        if ms is not None:
            times.setdefault((row["key"], row["D"]), {}).setdefault(name, []).append(ms)

# Output checks against the main build (NaN positions equal, largest difference elsewhere).
checks = {}
ref = None
base_name, ref_name = os.environ["AB_BASE"], os.environ["AB_REF"]
if os.path.isfile(os.path.join(work, "check", f"{ref_name}.pt")):
    ref = torch.load(os.path.join(work, "check", f"{ref_name}.pt"))
for n in names:
    p = os.path.join(work, "check", f"{n}.pt")
    if not os.path.isfile(p):
        checks[n] = "no output"
        continue
    got = torch.load(p)
    res = {}
    for case, o in got.items():
        r = ref.get(case) if ref else None
        if isinstance(o, str):
            res[case] = o
        elif not isinstance(r, torch.Tensor):
            res[case] = f"nan rows {int(o.isnan().any(-1).sum())}"
        else:
            same_nan = bool(torch.equal(o.isnan(), r.isnan()))
            fin = ~(o.isnan() | r.isnan())
            diff = float((o[fin] - r[fin]).abs().max()) if fin.any() else 0.0
            res[case] = f"nan positions {'equal' if same_nan else 'DIFFER'}, max diff {diff:.3g}"
    checks[n] = res

lines = []
head = f"{'pattern':24s} {'D':>4s} " + " ".join(f"{n:>16s}" for n in names)
lines.append(
    "median ms (mean of the rounds' medians; each round's median in brackets), "
    f"ratio to {base_name}"
)
lines.append(head)
table = []
for (key, D) in sorted(times, key=lambda x: (x[0], x[1])):
    per = times[(key, D)]
    base = statistics.mean(per[base_name]) if base_name in per else None
    cells, row = [], {"pattern": key, "D": D}
    for n in names:
        if n not in per:
            cells.append(f"{'-':>16s}")
            continue
        m = statistics.mean(per[n])
        row[n] = {"ms": m, "rounds": per[n], f"vs_{base_name}": m / base if base else None}
        ratio = f" x{m / base:.3f}" if base else ""
        cells.append(f"{m:7.3f}{ratio:>9s}")
    table.append(row)
    lines.append(f"{key:24s} {D:4d} " + " ".join(cells))
    lines.append(
        f"{'':24s} {'':4s} "
        + " ".join(
            f"{'[' + ' '.join(f'{x:.3f}' for x in per[n]) + ']':>16s}" if n in per else f"{'':16s}"
            for n in names
        )
    )
lines.append("")
lines.append(f"output checks against {ref_name}:")
for n in names:
    lines.append(f"  {n}:")
    if isinstance(checks[n], str):
        lines.append(f"    {checks[n]}")
    else:
        for case, s in checks[n].items():
            lines.append(f"    {case:36s} {s}")
text = "\n".join(lines)
print(text)
with open(os.path.join(out, "ab_summary.txt"), "w") as f:
    f.write(text + "\n")
meta = next(iter(runs.values()))["meta"] if runs else {}
summary = {"builds": names, "base": base_name, "ref": ref_name, "device": meta.get("device")}
summary.update(table=table, checks=checks)
summary["runs"] = runs
with open(os.path.join(out, "ab_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
EOF
