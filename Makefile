# The two commands: `make bench` (main job) and `make test`.
# Each builds .venv on first use (Python 3.11, gcc, pip) and is idempotent.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
CXX ?= g++
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NATIVE := wiou_ops/_wiou_ops_native.so
KERNEL_SOURCES := $(wildcard kernels/*.cc kernels/*.h)
# -Wno-*uninitialized: GCC 12 false positives inside its own AVX-512 intrinsic headers.
LOOP_FLAGS := -std=c++17 -O3 -march=native -fno-strict-aliasing -Wall -Wextra \
	-Wno-uninitialized -Wno-maybe-uninitialized

.PHONY: test bench venv native kernel-test clean

venv: $(STAMP)

# Dependencies (TensorFlow from tensorflow-cpu, pinned in pyproject.toml) and
# the package, editable.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

# The native CPU kernel, compiled against the venv's TensorFlow (setup.py).
native: $(NATIVE)
$(NATIVE): $(STAMP) setup.py $(KERNEL_SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .

# The kernel math on its own, without TensorFlow.
kernel-test: build/test_wiou_math
	build/test_wiou_math
build/test_wiou_math: $(KERNEL_SOURCES)
	mkdir -p build
	$(CXX) $(LOOP_FLAGS) -Ikernels kernels/test_wiou_math.cc kernels/wiou_math_instances.cc -o $@

# The unit tests, plus a seconds-long smoke of the pytest-benchmark suites
# (tiny inputs, each benchmark run once). The tests past 2^31 elements run first, in
# a pytest process of their own: they need most of the machine's memory.
test: $(STAMP) $(NATIVE) kernel-test
	$(PY) -m pytest -q -m large tests
	WIOU_BENCH_SIZES=2x32x32x1 $(PY) -m pytest -q -m "not large" tests benchmarks --benchmark-disable

bench: $(STAMP) $(NATIVE)
	$(VENV)/bin/wiou-bench --e2e --distribute --out-root benchmarks/results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache $(NATIVE)
