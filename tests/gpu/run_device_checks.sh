#!/usr/bin/env bash
# GPU checks in one go: the pytest suite, compute-sanitizer (memcheck, racecheck) on a small set,
# then optionally a benchmark. Logs go to $OUT (or ./out); the committed ones are in
# benchmarks/results/gpu-tests/, named after what ran and on which device (benchmarks/results/README.md).
# Usage:
#   tests/gpu/run_device_checks.sh [tests] [sanitize] [ort] [fuzz] [fuzz-sanitize] [trt] [bench ARGS...]
# ort and fuzz need onnxruntime-gpu on PYTHONPATH and SPATTN_LIB_DIR holding the CUDA build of
# libspattn_ort.so; trt needs SPATTN_TRT_HARNESS, SPATTN_TRT_LIB and SPATTN_TRT_NODES.
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
      # initcheck instruments every kernel: with a filter, the writes of torch's kernels are not
      # tracked and their tensors read back as uninitialized.
      for tool in memcheck racecheck initcheck; do
        filter=(--kernel-name kns=spattn); [ $tool = initcheck ] && filter=()
        compute-sanitizer --tool $tool "${filter[@]}" --error-exitcode 3 \
          python3 tests/gpu/sanitize_cases.py > "$OUT/sanitizer_$tool.log" 2>&1
        echo "compute-sanitizer $tool exit $?"; tail -4 "$OUT/sanitizer_$tool.log"
      done
      shift ;;
    ort)
      # ONNX Runtime's CUDA EP: parity with the CPU EP, CUDA graphs, 8 threads on one session
      # (and device memory flat over the soak's runs and sessions)
      python3 -m pytest -q -p no:cacheprovider tests/gpu/test_ort_cuda.py \
        tests/stress/test_concurrency.py tests/stress/test_soak.py \
        -k "cuda or not (eight_threads or rss)" 2>&1 \
        | tee "$OUT/ort_cuda.log" | tail -6
      shift ;;
    fuzz)
      # the fuzz campaign on the CUDA EP (tests/fuzz/README.md), seeded; summary + reproducers
      python3 -m tests.fuzz.run --cases "${FUZZ_CASES:-1500}" --seed "${FUZZ_SEED:-1}" \
        --provider cuda --jobs "${FUZZ_JOBS:-8}" --out "$OUT/fuzz_cuda" 2>&1 \
        | tr '\r' '\n' | grep -v "cases$" | tee "$OUT/fuzz_cuda.log" | tail -25
      shift ;;
    fuzz-sanitize)
      # compute-sanitizer memcheck over a CUDA fuzz subset: every child process, our kernels only
      compute-sanitizer --tool memcheck --target-processes all --kernel-name kns=spattn \
        --error-exitcode 3 python3 -m tests.fuzz.run --cases "${FUZZ_SANITIZE_CASES:-300}" \
        --seed "${FUZZ_SEED:-1}" --provider cuda --jobs 4 --out "$OUT/fuzz_cuda_memcheck" \
        > "$OUT/fuzz_cuda_memcheck.log" 2>&1
      echo "compute-sanitizer memcheck over the fuzz subset: exit $?"
      tr '\r' '\n' < "$OUT/fuzz_cuda_memcheck.log" | grep -v "cases$" | tail -4
      shift ;;
    trt)
      # the TensorRT plugin through its harness (TensorRT's runtime itself is not needed)
      python3 -m pytest -q -p no:cacheprovider tests/trt/test_trt_plugin.py 2>&1 \
        | tee "$OUT/trt_harness.log" | tail -6
      # the fuzz campaign's attribute sets through the plugin (tests/fuzz/trt_nodes.py)
      python3 -m tests.fuzz.trt_nodes --seed "${FUZZ_SEED:-1}" --cases 4000 --max-nodes 240 \
        -o "$OUT/fuzz_nodes.txt"
      "$SPATTN_TRT_HARNESS" --plugin "$SPATTN_TRT_LIB" --nodes "$OUT/fuzz_nodes.txt" \
        > "$OUT/trt_harness_fuzz.log" 2>&1
      echo "trt harness on the fuzz nodes: exit $?"; tail -3 "$OUT/trt_harness_fuzz.log"
      shift ;;
    bench)
      shift
      python3 benchmarks/bench_cuda.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | grep -v Warning
      break ;;
    *) echo "unknown step $1"; exit 2 ;;
  esac
done
