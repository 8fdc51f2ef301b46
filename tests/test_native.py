"""The native CPU kernel: determinism, fallbacks, dispatch rules.

Its values and gradients are checked against the float64 oracle and the seed
class in test_parity.py and test_dropin.py, like every implementation.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops import _native

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_native = pytest.mark.skipif(
    "native" not in wiou_ops.available_implementations(),
    reason=f"native op not built: {_native.UNAVAILABLE_REASON}",
)


def _python(code, env=None, cwd=ROOT):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_native_is_built_by_make():
    """`make test` builds the op: its absence here is a build failure, not a skip."""
    assert "native" in wiou_ops.available_implementations(), _native.UNAVAILABLE_REASON


@needs_native
def test_bit_identical_across_thread_counts():
    code = """
        import sys, hashlib
        import numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
        import wiou_ops
        rng = np.random.default_rng(0)
        shape = (3, 517, 389, 1)  # 603,339 elements: many blocks and a ragged tail
        y = tf.constant(rng.random(shape) < 0.07)
        p = tf.constant(rng.random(shape, dtype=np.float32))
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = wiou_ops.weighted_iou_loss(y, p, implementation="native")
        grad = tape.gradient(loss, p)
        print(hashlib.sha256(loss.numpy().tobytes() + grad.numpy().tobytes()).hexdigest())
    """
    digests = set()
    for threads in (1, 2, 4, 7):
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(threads)],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd=ROOT,
            capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests


@needs_native
def test_repeated_calls_reuse_buffer_safely():
    """The gradient buffer is recycled only when free: held results never change."""
    y_true, y_pred = helpers.make_inputs((4, 64, 64, 1), "random")
    loss = wiou_ops.WeightedIoULoss(implementation="native")
    held = []
    for scale in (1.0, 2.0, 3.0):
        _, grad = helpers.value_and_grad(loss, y_true, y_pred, scale)
        held.append(grad)
    base = helpers.to_f64(held[0])
    for scale, grad in zip((1.0, 2.0, 3.0), held):
        np.testing.assert_allclose(helpers.to_f64(grad), scale * base, rtol=1e-6)


def test_disable_variable_turns_native_off():
    out = _python("""
        import warnings
        warnings.simplefilter("error")
        import numpy as np, wiou_ops
        print(wiou_ops.available_implementations())
        wiou_ops.weighted_iou_loss(np.zeros((1, 4, 4, 1), "float32"), np.full((1, 4, 4, 1), 0.5, "float32"))
        print(wiou_ops.last_implementation())
    """, env={"WIOU_OPS_DISABLE_NATIVE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['xla', 'graph']", "xla"]


def test_missing_library_warns_once_and_falls_back(tmp_path):
    shutil.copytree(ROOT / "wiou_ops", tmp_path / "wiou_ops",
                    ignore=shutil.ignore_patterns(_native.LIBRARY_NAME, "__pycache__"))
    out = _python("""
        import numpy as np, wiou_ops
        import wiou_ops.losses
        print(wiou_ops.available_implementations())
        wiou_ops.weighted_iou_loss(np.zeros((1, 4, 4, 1), "float32"), np.full((1, 4, 4, 1), 0.5, "float32"))
        print(wiou_ops.last_implementation())
    """, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['xla', 'graph']", "xla"]
    assert out.stderr.count("RuntimeWarning: wiou_ops: the native CPU kernel is not built") == 1


def test_library_for_another_tensorflow_is_refused_before_loading(tmp_path):
    (tmp_path / _native.LIBRARY_NAME).write_bytes(
        b"\x7fELF not a real library WIOU_BUILT_FOR_TENSORFLOW=2.99.0\n")
    library, reason = _native.load(tmp_path)
    assert library is None
    assert "built for TensorFlow 2.99.0" in reason and tf.__version__ in reason


def test_unstamped_or_missing_library(tmp_path):
    assert "not built" in _native.load(tmp_path)[1]
    (tmp_path / _native.LIBRARY_NAME).write_bytes(b"\x7fELF garbage")
    assert "no TensorFlow version stamp" in _native.load(tmp_path)[1]


@needs_native
def test_native_refuses_xla_context_and_unsupported_dtypes():
    y = np.zeros((1, 8, 8, 1), np.float32)
    p = np.full((1, 8, 8, 1), 0.5, np.float32)
    loss = wiou_ops.WeightedIoULoss(implementation="native")
    with pytest.raises(ValueError, match="XLA"):
        tf.function(loss, jit_compile=True)(y, p)
    with pytest.raises(TypeError, match="float64"):
        loss(y, p.astype(np.float64))
    # auto sends what native cannot take to xla
    wiou_ops.weighted_iou_loss(y, p.astype(np.float64))
    assert wiou_ops.last_implementation() == "xla"
    tf.function(wiou_ops.WeightedIoULoss(), jit_compile=True)(y, p)
    assert wiou_ops.last_implementation() == "xla"


@needs_native
def test_stream_read_probe_sums():
    x = np.random.default_rng(0).random(100_003).astype(np.float32)
    got = float(_native.stream_read(tf.constant(x)))
    assert got == pytest.approx(float(np.sum(x, dtype=np.float64)), rel=1e-5)
