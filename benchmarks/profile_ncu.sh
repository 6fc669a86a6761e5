#!/usr/bin/env bash
# GPU: Nsight Compute profile of one attention kernel on one pattern (benchmarks/profile_one.py).
# Writes OUT/<kernel>_<pattern>_details.txt (ncu --page details) and _src.csv.gz (per-instruction
# samples and counts with CUDA source lines), which benchmarks/ncu_summary.py summarizes.
#   OUT=dir PAT=sliding L=16384 D=128 KERNELS="ws wgmma" benchmarks/profile_ncu.sh
set -u
OUT=${OUT:-out}; PAT=${PAT:-sliding}; L=${L:-16384}; D=${D:-128}
mkdir -p "$OUT"
for K in ${KERNELS:-ws wgmma}; do
  rep="$OUT/${K}_${PAT}"
  SPATTN_CUDA_KERNEL=$K PAT=$PAT L=$L D=$D ncu --kernel-name regex:"${K}_attention" \
    --launch-skip 1 --launch-count 1 --set full --import-source yes -f -o "$rep" \
    python3 benchmarks/profile_one.py > /dev/null 2>&1
  ncu -i "$rep.ncu-rep" --page details > "${rep}_details.txt" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source cuda,sass | gzip > "${rep}_src.csv.gz"
  rm -f "$rep.ncu-rep"
done
