# The two commands: `make bench` (main job) and `make test`.
# Each builds .venv on first use (Python 3.11, gcc, pip) and is idempotent.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
CXX ?= g++
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AOT_VENV := .venv-aot
# TensorFlow's programs of the loss for TPU and GPU (HLO, written with .venv's TensorFlow),
# compiled in $(AOT_VENV).
AOT_TF_PROGRAMS := build/aot-tensorflow
NATIVE := wiou_ops/_wiou_ops_native.so
KERNEL_SOURCES := $(wildcard kernels/*.cc kernels/*.h) wiou_ops/_kernels/native_build.py

.PHONY: test bench bench-aot venv native kernel-test wheel test-compat clean

venv: $(STAMP)

# Dependencies (TensorFlow from tensorflow-cpu, pinned in pyproject.toml) and
# the package, editable.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[test,bench,release]"
	touch $(STAMP)

# The native CPU kernel, compiled against the venv's TensorFlow (setup.py).
native: $(NATIVE)
$(NATIVE): $(STAMP) setup.py $(KERNEL_SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .

# The kernel math on its own, without TensorFlow, at every instruction-set level
# this CPU has (the loops built as the library builds them: native_build.py).
kernel-test: build/test_wiou_math
	build/test_wiou_math
build/test_wiou_math: $(KERNEL_SOURCES)
	$(PYTHON) wiou_ops/_kernels/native_build.py kernel-test $@

# The unit tests, plus a seconds-long smoke of the pytest-benchmark suites
# (tiny inputs, each benchmark run once). The tests past 2^31 elements run first, in
# a pytest process of their own: they need most of the machine's memory. The rest run
# in two pytest-xdist workers (much of the time is XLA compiling and processes starting,
# which one worker leaves half idle); loadgroup keeps test_wheel.py on one worker.
test: $(STAMP) $(NATIVE) kernel-test $(AOT_VENV)/.installed
	$(PY) -m pytest -q -m large --ignore=tests/aot tests
	$(PY) benchmarks/aot/tensorflow_programs.py --cases test --out $(AOT_TF_PROGRAMS)
	WIOU_OPS_TF_PROGRAMS=$(AOT_TF_PROGRAMS) $(AOT_VENV)/bin/python -m pytest -q \
		-p no:cacheprovider tests/aot
	WIOU_BENCH_SIZES=2x32x32x1 $(PY) -m pytest -q -m "not large" -n 2 --dist loadgroup \
		--ignore=tests/aot tests benchmarks --benchmark-disable

# The TPU and GPU compilers, deviceless, in a venv of their own (libtpu and the CUDA
# plugin would make every other test's JAX look for those devices). No package install:
# benchmarks/aot/ puts the checkout on sys.path.
$(AOT_VENV)/.installed: benchmarks/aot/requirements.txt
	test -x $(AOT_VENV)/bin/python || $(PYTHON) -m venv $(AOT_VENV)
	$(AOT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AOT_VENV)/bin/python -m pip install --quiet -r benchmarks/aot/requirements.txt
	touch $@

# What XLA makes of the loss for TPU v5e/v6e/v5p/v4 and H100/H200, against the naive
# formula: benchmarks/results/aot/report.md.
bench-aot: $(STAMP) $(AOT_VENV)/.installed
	$(PY) benchmarks/aot/tensorflow_programs.py --out $(AOT_TF_PROGRAMS)
	$(AOT_VENV)/bin/python benchmarks/aot/report.py --out benchmarks/results/aot \
		--tensorflow $(AOT_TF_PROGRAMS)

# A second version set, TensorFlow 2.20 with Keras 3.10 (the oldest Keras that TensorFlow
# 2.20 accepts): the drop-in, float64-oracle, training-parity and native-kernel tests on
# the checkout, in a venv of its own. The kernel for TensorFlow 2.20 is compiled on first
# use into that venv's cache. The test tools are the test extra's (pyproject.toml); the
# extra itself is not installed, since it pins TensorFlow 2.21.
COMPAT_VENV := .venv-tf2.20
$(COMPAT_VENV)/.installed: pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet "tensorflow-cpu==2.20.*" "keras==3.10.*" \
		"pytest>=8" "hypothesis>=6.100" "tifffile>=2024.1"
	touch $@
test-compat: $(COMPAT_VENV)/.installed
	WIOU_OPS_CACHE_DIR="$(abspath $(COMPAT_VENV))/kernel-cache" $(COMPAT_VENV)/bin/python -m \
		pytest -q tests/test_dropin.py tests/test_parity.py tests/test_training.py \
		tests/test_native.py

# dist/: the sdist, and a wheel with the kernel prebuilt for the venv's TensorFlow,
# tagged manylinux by auditwheel. libtensorflow_framework.so.2 comes with TensorFlow
# itself, so it is left out of the wheel (--exclude), not copied in.
wheel: $(STAMP)
	rm -rf dist
	$(PY) -P -m build --sdist --no-isolation --outdir dist .
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist/linux dist/*.tar.gz
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair \
		--exclude libtensorflow_framework.so.2 --wheel-dir dist dist/linux/*.whl
	rm -rf dist/linux
	ls -l dist

bench: $(STAMP) $(NATIVE)
	$(VENV)/bin/wiou-bench --e2e --distribute --multiclass --out-root benchmarks/results

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(AOT_VENV) build dist *.egg-info .pytest_cache $(NATIVE)
