"""pytest-benchmark suites over wiou-bench's variants.

    pytest benchmarks --benchmark-only --benchmark-json=out.json   # real timings
    WIOU_BENCH_SIZES=2x32x32x1 pytest benchmarks --benchmark-disable   # `make test`'s smoke

WIOU_BENCH_SIZES (space-separated shapes) and WIOU_BENCH_DTYPES (PRED/TRUE pairs)
choose the cases; defaults: 16x512x512x1, float32/float32 and bfloat16/uint8.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _sizes():
    text = os.environ.get("WIOU_BENCH_SIZES", "16x512x512x1")
    return [tuple(int(d) for d in s.split("x")) for s in text.split()]


def _dtypes():
    text = os.environ.get("WIOU_BENCH_DTYPES", "float32/float32 bfloat16/uint8")
    return [tuple(pair.split("/")) for pair in text.split()]


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", _sizes(), ids=lambda s: "x".join(map(str, s)),
                             scope="module")
    if "dtypes" in metafunc.fixturenames:
        metafunc.parametrize("dtypes", _dtypes(), ids=lambda d: "/".join(d), scope="module")
