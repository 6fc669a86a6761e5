# The two commands of the README:
#   make demo   sets everything up, exports a long-context model, runs it in ONNX Runtime through
#               our op, prints the numerical check and the timing against dense attention
#   make test   sets everything up and runs the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(shell find kernels plugins trt_plugins exporter cmake samples -type f -not -name '*.pyc' 2>/dev/null) \
           pyproject.toml CMakeLists.txt

.PHONY: setup demo test lint fuzz sanitize sanitize-thread soak bench-cpu bench-triton clean

TRITON_SERVER := nvidia-pytriton==0.7.0
TRITON_CLIENT_DEPS := "geventhttpclient>=2.3.3" "greenlet<3.4" "grpcio>=1.81.1" \
                      python-rapidjson "urllib3>=2.0.7"

setup: $(VENV)/.installed

# Each setup step says what it does before it starts, pip shows its download bars, and the build
# of the libraries shows CMake's [done/total] steps (the longest part: the CUDA kernels).
$(VENV)/.installed: $(SOURCES)
	@echo "setup 1/4: Python environment $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup 2/4: PyTorch 2.13 (CPU build, about 200 MB to download the first time)"
	# torch pinned to the CPU build: a plain `torch` requirement would pull a multi-GB CUDA build
	set -o pipefail; $(BIN)/python -m pip install --progress-bar on torch==2.13.0 \
	  | { grep -v "^Requirement already" || true; }
	@echo "setup 3/4: spattn: C++/CUDA libraries (CMake, a few minutes with CUDA) and the package"
	@echo "           full log: $(VENV)/setup-build.log"
	set -o pipefail; $(BIN)/python -m pip install -v ".[test]" 2>&1 | tee $(VENV)/setup-build.log \
	  | { grep --line-buffered -E "^ *\[[0-9]+/[0-9]+\] |^Successfully installed|-- spattn:" || true; } \
	  || { tail -n 40 $(VENV)/setup-build.log; exit 1; }
	@echo "setup 4/4: Triton's model-config schema (to check generated config.pbtxt files)"
	# Triton's own model-config schema, to check the generated config.pbtxt files (protobuf only)
	$(BIN)/python -m pip install -q --no-deps tritonclient==2.73.0
	# spattn serve and tests/triton: nvidia-pytriton's tritonserver (python backend). --no-deps:
	# only its server is used, not its Python API, whose numpy<2 pin would downgrade numpy.
	$(BIN)/python -m pip install -q --no-deps $(TRITON_SERVER)
	# tritonclient's HTTP and gRPC clients (its [http,grpc] extras without their protobuf<7 pin)
	$(BIN)/python -m pip install -q $(TRITON_CLIENT_DEPS)
	touch $@
	@echo "setup done: $(BIN)/spattn doctor says what is usable here"

demo: setup
	$(BIN)/python samples/quickstart.py

# The lint gate (CI runs it before the tests): pinned PyPI wheels, no GitHub-hosted hook.
LINT_TOOLS := ruff==0.17.6 clang-format==23.1.5 mypy==2.4.1

lint: $(VENV)/.lint-tools
	bash scripts/lint.sh $(BIN)/python

$(VENV)/.lint-tools:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(LINT_TOOLS)
	touch $@

test: setup
	bash scripts/run-tests.sh $(BIN)/python

# The long fuzz campaign (tests/fuzz/README.md): valid and invalid models and inputs through
# ONNX Runtime's CPU EP and our library, each case checked against an independent oracle or the
# error table of docs/op-spec.md. Writes fuzz-out/summary.json and a reproducer per failure.
FUZZ_CASES ?= 5000
FUZZ_SEED ?= 1
FUZZ_JOBS ?= $(shell nproc)
FUZZ_PROVIDER ?= cpu

fuzz: setup
	$(BIN)/python -m tests.fuzz.run --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) \
	  --provider $(FUZZ_PROVIDER) --jobs $(FUZZ_JOBS) --out fuzz-out

# Sanitizers (docs/testing.md): the kernels and the ONNX Runtime library built with ASan + UBSan
# (CPU only, build-sanitize/address) under the C++ tests and the tests that drive them through
# the C API and ONNX Runtime; with ThreadSanitizer (build-sanitize/thread) under the concurrency
# tests. Any sanitizer report fails the target.
sanitize: setup
	bash scripts/sanitize.sh $(BIN)/python address

sanitize-thread: setup
	bash scripts/sanitize.sh $(BIN)/python thread

# The full-size soak: 10,000 runs and 1,000 sessions with flat memory (make test runs 1,000/200).
soak: setup
	SPATTN_SOAK_FULL=1 $(BIN)/python -m pytest --rootdir=. -c pyproject.toml -q tests/stress/test_soak.py

bench-cpu: setup
	$(BIN)/python benchmarks/bench_cpu.py

bench-triton: setup
	$(BIN)/python benchmarks/bench_triton.py

clean:
	rm -rf build build-sanitize $(VENV)
