# fullconv: `make test` and `make demo` each set up everything they need on a fresh machine
# (a .venv in the repository root, torch, the compiled extension, test dependencies).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export CUDA_HOME ?= /usr/local/cuda
# Build the CUDA kernels whenever nvcc is present, GPU or not, so every CUDA source and the
# binding are compiled (and their registration tested) on CPU-only machines too.
export FORCE_CUDA ?= $(shell test -x "$(CUDA_HOME)/bin/nvcc" && echo 1 || echo 0)
export FULLCONV_EXPECT_CUDA := $(FORCE_CUDA)

DEPS_STAMP  := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.fullconv-built-cuda$(FORCE_CUDA)
SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.h csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp csrc/cuda/*.h)

.PHONY: test demo bench setup clean gpu-check gpu-followup

setup: $(BUILD_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements/torch.txt requirements/test.txt | $(PY)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -r requirements/test.txt
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	rm -f $(VENV)/.fullconv-built-cuda*
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

# pytest exits 5 when it collects no tests: that is a failure here, not a pass.
test: $(BUILD_STAMP)
	@$(PY) -m pytest tests -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(BUILD_STAMP)
	$(PY) -m experiments.demo

bench: $(BUILD_STAMP)
	$(PY) benchmarks/bench_cpu.py

# On a GPU machine with torch preinstalled and no network: build with CUDA, run every test on
# the GPU, compute-sanitizer, the GPU benchmark; logs + JSON to $(OUT).
gpu-check:
	OUT=$(or $(OUT),benchmarks/results) bash benchmarks/gpu_check.sh

# After gpu-check, on the same machine and build: the main-loop probe, the tiles' profile, each
# pass's kernels, the benchmark with the 256-row tiles beside the default
# (benchmarks/gpu_followup.sh).
gpu-followup:
	OUT=$(or $(OUT),benchmarks/results) bash benchmarks/gpu_followup.sh

clean:
	rm -rf build *.egg-info fullconv/_C*.so $(VENV)/.fullconv-built-cuda*
