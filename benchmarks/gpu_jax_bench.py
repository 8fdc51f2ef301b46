"""The prepared GPU benchmark: ``wiou-bench --backend jax`` with GPU sizes, in one call.

Made for a machine with JAX (CUDA) and no TensorFlow and no internet, keras
carried as a wheel (the device tool's GPU machines): it needs only this
checkout on ``sys.path``, runs Keras on its JAX backend and never imports
TensorFlow. The protocol, variants and report are ``wiou_ops/bench/jax_bench.py``:
the seed class (keras.ops) vs ``wiou_ops.jax`` under ``jax.jit``,
forward+backward, float32/bfloat16 y_pred x float32/uint8 y_true, 256x and
1024x512x512x1 by default on a GPU, copy bandwidth and byte floor measured in
the same run; results into ``benchmarks/results/jax-gpu-<device kind>/``.

    python benchmarks/gpu_jax_bench.py [--sizes 1024x512x512x1 ...] [--rounds 30] [--out DIR]
"""

import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's wiou_ops

from wiou_ops.bench import jax_bench  # noqa: E402

if __name__ == "__main__":
    jax_bench.main()
