#!/usr/bin/env bash
# GPU checks in one go: the pytest suite, compute-sanitizer (memcheck, racecheck) on a small set,
# then optionally a benchmark. Logs go to $OUT (or ./out); the committed ones are in
# benchmarks/results/gpu-tests/, named after what ran and on which device (benchmarks/results/README.md).
# Usage:
#   tests/gpu/run_device_checks.sh [tests] [sanitize] [bench ARGS...]
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export SPATTN_KERNELS_LIB=${SPATTN_KERNELS_LIB:-$PWD/.gpu/libspattn_kernels.so}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
while [ $# -gt 0 ]; do
  case "$1" in
    tests)
      python3 -m pytest -q -m gpu tests/gpu/test_cuda_kernel.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -25
      shift ;;
    sanitize)
      for tool in memcheck racecheck; do
        compute-sanitizer --tool $tool --kernel-name kns=spattn --error-exitcode 3 \
          python3 tests/gpu/sanitize_cases.py > "$OUT/sanitizer_$tool.log" 2>&1
        echo "compute-sanitizer $tool exit $?"; tail -4 "$OUT/sanitizer_$tool.log"
      done
      shift ;;
    bench)
      shift
      python3 benchmarks/bench_cuda.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | grep -v Warning
      break ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
done
