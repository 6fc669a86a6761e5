#!/usr/bin/env bash
# Runs the test suite with the given interpreter. Fails when no test is collected (pytest exit 5)
# and when any test fails.
set -uo pipefail
py=${1:-python3}
cd "$(dirname "$0")/.."
# Every Hugging Face family is exported and run in ONNX Runtime (SPATTN_HF_FULL=0: one model per
# op feature, for a quicker local run).
export SPATTN_HF_FULL=${SPATTN_HF_FULL:-1}
# `import spattn` is the installed package (sources in exporter/spattn/).
"$py" -m pytest --rootdir=. -c pyproject.toml tests "${@:2}"
rc=$?
if [ $rc -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
exit $rc
