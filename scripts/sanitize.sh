#!/usr/bin/env bash
# Builds the kernels and the ONNX Runtime library (CPU only) with sanitizers and runs the tests
# that drive them: the C++ unit tests, then the Python tests that go through the direct C API and
# ONNX Runtime, in a Python process with the sanitizer runtime preloaded.
#   scripts/sanitize.sh PYTHON address   AddressSanitizer + UndefinedBehaviorSanitizer
#   scripts/sanitize.sh PYTHON thread    ThreadSanitizer, the concurrency tests
# Fails on any sanitizer report (written to build-sanitize/<mode>/reports/ and printed, or found in
# the test log build-sanitize/<mode>/pytest.log), on any failed test, and when the library the
# tests loaded is not the sanitized one.
# Extra arguments go to pytest (e.g. -k, -x).
set -uo pipefail
py=${1:?usage: scripts/sanitize.sh PYTHON address|thread [pytest args]}
mode=${2:?usage: scripts/sanitize.sh PYTHON address|thread [pytest args]}
shift 2
cd "$(dirname "$0")/.."
root=$PWD
extra=()
case $mode in
  address)
    sanitizers="address;undefined"
    runtimes="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    tests=(tests/kernels/test_cpu_kernel.py tests/plugins tests/stress/test_concurrency.py)
    if [[ -f tests/fuzz/test_fuzz_ci.py ]]; then
      tests+=(tests/fuzz/test_fuzz_ci.py)
      # The fuzz runner's self-test kills a child with SIGSEGV on purpose, which the ASan runtime
      # would report as a finding; it tests the runner, not the library.
      extra+=(--deselect tests/fuzz/test_fuzz_ci.py::test_runner_pins_crash_and_hang_on_their_cases)
    fi
    ;;
  thread)
    sanitizers="thread"
    runtimes="$(gcc -print-file-name=libtsan.so)"
    tests=(tests/stress/test_concurrency.py)
    ;;
  *)
    echo "error: mode must be address or thread, got '$mode'" >&2
    exit 2
    ;;
esac
for r in $runtimes; do
  [[ -f $r ]] || { echo "error: sanitizer runtime $r not found (gcc's libasan/libubsan/libtsan)" >&2; exit 1; }
done

# Its own build tree, outside build/: runtime.library_path searches build/ for the libraries of
# an editable install, and must never pick a sanitized one up in an ordinary run.
build=$root/build-sanitize/$mode
reports=$build/reports
cmake_args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
  "-DSPATTN_SANITIZE=$sanitizers" -DSPATTN_BUILD_TESTS=ON -DSPATTN_CUDA=OFF -DSPATTN_TRT=OFF
  -DSPATTN_BUILD_SAMPLES=OFF)
# The ONNX Runtime headers of an earlier build, when there is one (else CMake fetches them).
hdr=$(ls -d build/*/_deps/onnxruntime-headers/root/usr/include/onnxruntime 2>/dev/null | head -n 1)
[[ -n $hdr && -f $hdr/onnxruntime_c_api.h ]] && cmake_args+=("-DSPATTN_ORT_INCLUDE_DIR=$root/$hdr")
echo "sanitize ($mode): build in $build"
mkdir -p "$build"
cmake "${cmake_args[@]}" >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${SPATTN_SANITIZE_JOBS:-2}" || exit 1

rm -rf "$reports"
mkdir -p "$reports"
# Python and its extension modules are not instrumented and leak by design: no leak checking.
# Each process writes its reports to its own file (log_path.<pid>), so a report from a child
# process or one that a test's output capture would swallow still fails the run.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$root/scripts/tsan.supp:log_path=$reports/tsan"
# Tests and harnesses that must behave differently under a sanitizer read this (an address-space
# limit, RLIMIT_AS, keeps the ASan runtime from mapping its shadow memory).
export SPATTN_SANITIZER=$mode
export SPATTN_LIB_DIR=$build/kernels:$build/plugins
export SPATTN_KERNELS_LIB=$build/kernels/libspattn_kernels.so  # spattn.capi: before any .gpu/ build
export SPATTN_SANITIZED_LIB_DIR=$SPATTN_LIB_DIR
# The pytest plugin that checks which spattn libraries the run loaded (scripts/).
export PYTHONPATH=$root/scripts${PYTHONPATH:+:$PYTHONPATH}

status=0
if [[ $mode == address ]]; then
  echo "sanitize ($mode): C++ unit tests"
  "$build/tests/kernels/spattn_test_pattern" | tail -n 1 || status=1
fi

echo "sanitize ($mode): ${tests[*]}"
# ThreadSanitizer maps its shadow memory at fixed addresses, which a randomized layout can
# overlap: the Python process runs without address randomization (setarch -R).
launcher=()
[[ $mode == thread ]] && launcher=(setarch "$(uname -m)" -R)
# --capture=sys: a sanitizer writes its report to file descriptor 2 (UBSan ignores log_path when
# it shares the ASan runtime); pytest's fd capture would lose it when the process aborts.
log=$build/pytest.log
LD_PRELOAD="$runtimes" "${launcher[@]}" "$py" -m pytest --rootdir=. -c pyproject.toml -q \
  --capture=sys -p sanitize_pytest_plugin "${extra[@]}" "${tests[@]}" "$@" 2>&1 | tee "$log"
((PIPESTATUS[0])) && status=1
if grep -qE "runtime error:|(Address|Thread|UndefinedBehavior|Leak)Sanitizer" "$log"; then
  echo "sanitize ($mode): sanitizer output in the test log ($log)" >&2
  status=1
fi

shopt -s nullglob
found=("$reports"/*)
if ((${#found[@]})); then
  echo "sanitize ($mode): ${#found[@]} sanitizer report file(s):" >&2
  for f in "${found[@]}"; do
    echo "==== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
if ((status)); then
  echo "sanitize ($mode): FAILED" >&2
else
  echo "sanitize ($mode): passed, no sanitizer report"
fi
exit $status
