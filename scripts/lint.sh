#!/usr/bin/env bash
# The lint gate: ruff check, ruff format --check, clang-format --dry-run (C++/CUDA) and mypy on the
# package. The tools are pinned PyPI wheels (installed by `make lint`), so the gate gives the same
# answer on every machine and needs no GitHub-hosted hook.
#   scripts/lint.sh [PYTHON]        check (CI)
#   FIX=1 scripts/lint.sh [PYTHON]  rewrite the files instead (ruff --fix, ruff format, clang-format -i)
set -uo pipefail
py=${1:-python3}
bin=$(dirname "$py")
cd "$(dirname "$0")/.."
cxx=$(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' '*.inc')
rc=0
step() {
  echo "lint: $*"
  "$@" || rc=1
}
if [ "${FIX:-0}" = 1 ]; then
  step "$bin/ruff" check --fix .
  step "$bin/ruff" format .
  step "$bin/clang-format" -i $cxx
else
  step "$bin/ruff" check .
  step "$bin/ruff" format --check .
  step "$bin/clang-format" --dry-run --Werror $cxx
fi
step "$bin/mypy" exporter/spattn
[ $rc -eq 0 ] && echo "lint: passed" || echo "lint: FAILED (FIX=1 scripts/lint.sh rewrites what the formatters can)" >&2
exit $rc
