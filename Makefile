# fullconv: `make test` and `make demo` each set up everything they need on a fresh machine
# (a .venv in the repository root, torch, the compiled extension, test dependencies).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export CUDA_HOME ?= /usr/local/cuda

DEPS_STAMP  := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.fullconv-built
SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp csrc/cuda/*.h)

.PHONY: test demo bench setup clean

setup: $(BUILD_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements/torch.txt requirements/test.txt | $(PY)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -r requirements/test.txt
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

# pytest exits 5 when it collects no tests: that is a failure here, not a pass.
test: $(BUILD_STAMP)
	@$(PY) -m pytest tests -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(BUILD_STAMP)
	$(PY) -m fullconv.demo

bench: $(BUILD_STAMP)
	$(PY) benchmarks/bench_cpu.py

clean:
	rm -rf build *.egg-info fullconv/_C*.so $(BUILD_STAMP)
