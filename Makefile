# The two commands of the README:
#   make demo   sets everything up, exports a long-context model, runs it in ONNX Runtime through
#               our op, prints the numerical check and the timing against dense attention
#   make test   sets everything up and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(shell find kernels plugins trt_plugins exporter cmake samples -type f -not -name '*.pyc' 2>/dev/null) \
           pyproject.toml CMakeLists.txt

.PHONY: setup demo test lint bench-cpu bench-triton clean

TRITON_SERVER := nvidia-pytriton==0.7.0
TRITON_CLIENT_DEPS := "geventhttpclient>=2.3.3" "greenlet<3.4" "grpcio>=1.81.1" \
                      python-rapidjson "urllib3>=2.0.7"

setup: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch pinned to the CPU build: a plain `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q ".[test]"
	# Triton's own model-config schema, to check the generated config.pbtxt files (protobuf only)
	$(BIN)/python -m pip install -q --no-deps tritonclient==2.73.0
	# spattn serve and tests/triton: nvidia-pytriton's tritonserver (python backend). --no-deps:
	# only its server is used, not its Python API, whose numpy<2 pin would downgrade numpy.
	$(BIN)/python -m pip install -q --no-deps $(TRITON_SERVER)
	# tritonclient's HTTP and gRPC clients (its [http,grpc] extras without their protobuf<7 pin)
	$(BIN)/python -m pip install -q $(TRITON_CLIENT_DEPS)
	touch $@

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

bench-cpu: setup
	$(BIN)/python benchmarks/bench_cpu.py

bench-triton: setup
	$(BIN)/python benchmarks/bench_triton.py

clean:
	rm -rf build $(VENV)
