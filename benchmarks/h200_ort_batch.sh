#!/usr/bin/env bash
# GPU runs that need ONNX Runtime's CUDA EP, each step under its own time limit (hf 200 s,
# tests 150 s, triton 300 s), so that `hf tests` and `triton` each end within 10 minutes:
#   hf       the Hugging Face table (benchmarks/bench_hf.py --provider cuda): spattn's export
#            against Optimum's, float16, L = 16K and 64K
#   tests    tests/gpu/test_ort_cuda.py (the op on the CUDA EP against the CPU kernel)
#   triton   benchmarks/bench_triton.py --kind gpu (CUDA EP instances of the python backend), when
#            nvidia-pytriton and tritonclient are importable
# Needs: onnxruntime-gpu importable (PYTHONPATH), and PACK (default .gpu/hf) holding what
# `python benchmarks/bench_hf.py --prepare-gpu PACK` wrote, the CUDA build of libspattn_ort.so
# (PACK/libspattn_ort.so, or .so.xz), and optionally wheels under PACK/wheels/ to install first
# (tritonclient and what it needs). Writes at most 8 files to $OUT (default ./out).
# Usage: bash benchmarks/h200_ort_batch.sh [hf] [tests] [triton]   (default: all three)
set -u
OUT=${OUT:-out}
PACK=${PACK:-.gpu/hf}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(hf tests triton)
log=$OUT/batch.log
exec > >(tee -a "$log") 2>&1

# our library, built with CUDA (carried compressed: the .so is ~39 MB, the call carries 64 MiB)
lib=/tmp/spattn_lib
mkdir -p "$lib"
if [ -f "$PACK/libspattn_ort.so.xz" ]; then
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    "$PACK/libspattn_ort.so.xz" "$lib/libspattn_ort.so"
elif [ -f "$PACK/libspattn_ort.so" ]; then
  cp "$PACK/libspattn_ort.so" "$lib/"
else
  echo "no libspattn_ort.so(.xz) in $PACK: build spattn with CUDA and copy it there"; exit 2
fi
export SPATTN_LIB_DIR=$lib
if ls "$PACK"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$PACK"/wheels/*.whl
fi
case ":${PYTHONPATH:-}:" in *:"$SITE":*) ;; *) export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} ;; esac
export PYTHONPATH=$PYTHONPATH:$PWD/exporter

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 - <<'EOF'
import onnxruntime as ort, sys
print("python", sys.version.split()[0], "onnxruntime", ort.__version__, ort.get_available_providers())
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit("onnxruntime has no CUDAExecutionProvider: stage onnxruntime-gpu into /tmp/site first")
EOF
[ $? -eq 0 ] || exit 3
df -h /dev/shm | tail -1
rc=0
for step in "${steps[@]}"; do
  t0=$(date +%s)
  case "$step" in
    hf)
      # Optimum's dense attention at 64K needs more than the GPU has: its failure is recorded
      timeout 200 python3 benchmarks/bench_hf.py --provider cuda --gpu-pack "$PACK" \
        --lengths 4096 8192 16384 65536 --runs 5 --decode-steps 32 --timeout-s 90 \
        --work /tmp/spattn_bench_hf --out "$OUT/hf_cuda_h200.json" --plot "$OUT/hf_cuda_h200.png" \
        || rc=1
      ;;
    tests)
      timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_ort_cuda.py \
        > "$OUT/ort_cuda_tests_h200.txt" 2>&1 || rc=1
      tail -5 "$OUT/ort_cuda_tests_h200.txt"
      ;;
    triton)
      if ! python3 -c "import importlib.util as u, tritonclient.grpc; assert u.find_spec('pytriton')" 2>/dev/null; then
        echo "triton: nvidia-pytriton or tritonclient not importable, skipped"; rc=1; continue
      fi
      timeout 300 python3 benchmarks/bench_triton.py --kind gpu --instances 2 --threads 1 \
        -p d_model=512 -p nhead=8 -p num_layers=2 -p attention_window=512 \
        --lengths 4096 8192 16384 32768 65536 --requests 64 --clients 1 8 32 --max-batch-size 4 \
        --server-arg=--backend-config=python,shm-default-byte-size=134217728 \
        --tag h200 || rc=1
      cp benchmarks/results/triton_h200.json benchmarks/results/triton_h200.png "$OUT/" 2>/dev/null
      ;;
    *) echo "unknown step $step (hf, tests, triton)"; exit 2 ;;
  esac
  echo "== $step: $(($(date +%s) - t0)) s"
done
exit $rc
