"""Shared inputs and tolerances for the parity tests."""

import numpy as np
import tensorflow as tf

PRED_DTYPES = ("float32", "float16", "bfloat16")

# Value: every dtype accumulates in float32 from the same rounded inputs.
VALUE_RTOL = 1e-6
# Gradient, max-abs error over max-abs: the gradient is rounded to y_pred's
# dtype (float16 has 11 significant bits, bfloat16 8).
GRAD_RTOL = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 8e-3}

EPSILON = 1e-7


def make_inputs(shape, case, pred_dtype="float32", true_dtype="float32", seed=0):
    """Returns (y_true, y_pred) as tensors of the asked dtypes.

    case: "random" (about 10 % foreground, with predictions exactly 0, 1, ε and
    1-ε planted in), "empty" (no foreground), "full" (all foreground),
    "saturated" (predictions only 0 and 1, ties at ε and 1-ε).
    """
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    y = rng.random(n) < 0.1
    p = rng.uniform(0.02, 0.98, n).astype(np.float32)
    if case == "empty":
        y[:] = False
    elif case == "full":
        y[:] = True
    elif case == "saturated":
        p = rng.integers(0, 2, n).astype(np.float32)
    if case in ("random", "saturated") and n >= 16:
        special = np.float32([0.0, 1.0, EPSILON, 1.0 - EPSILON])
        idx = rng.choice(n, size=min(n // 4, 64), replace=False)
        p[idx] = special[np.arange(idx.size) % 4]
    y_true = tf.cast(tf.constant(y.reshape(shape)), true_dtype)
    y_pred = tf.cast(tf.constant(p.reshape(shape)), pred_dtype)
    return y_true, y_pred


def upstream_scale(pred_dtype, n):
    """A loss-scale-like factor so that 16-bit gradients stay in the normal range."""
    return 1.0 if pred_dtype == "float32" else float(min(n, 2**15))


def value_and_grad(loss_fn, y_true, y_pred, upstream):
    y_pred = tf.convert_to_tensor(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = loss_fn(y_true, y_pred)
    grad = tape.gradient(loss, y_pred, output_gradients=tf.cast(upstream, loss.dtype))
    return loss, grad


# ``xla`` as compiled for TPU and for GPU (the inputs' own layout and staged sums; on GPU
# the backward's barrier), run on this CPU: test grids take these beside the real names.
XLA_FOR_ACCELERATORS = ["xla@tpu", "xla@gpu"]


def use_implementation(impl, monkeypatch):
    """The implementation name for the loss. "xla@tpu"/"xla@gpu": the TensorFlow backend
    then compiles ``xla`` for that platform (its ``compiled_platform`` patched; eager
    graphs traced for another platform are not reused)."""
    name, _, platform = impl.partition("@")
    if platform:
        from wiou_ops._backends import tensorflow as backend

        monkeypatch.setattr(backend, "compiled_platform", lambda tensor: platform)
        monkeypatch.setattr(backend, "_EAGER_GRAPHS", {})
    return name


def to_f64(x):
    return np.asarray(tf.cast(x, tf.float64))


def rel_err(actual, expected):
    """max |a - e| / max |e|; exact equality needed when e is all zero."""
    actual, expected = to_f64(actual), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    diff = np.max(np.abs(actual - expected)) if expected.size else 0.0
    if scale == 0.0:
        return float(diff)
    return float(diff / scale)


def expected_auto(in_xla, pred_dtype="float32"):
    """What `auto` must pick on this CPU-only test machine (docs/design.md, "Dispatch")."""
    import wiou_ops

    native = "native" in wiou_ops.available_implementations()
    if in_xla or not native or pred_dtype not in ("float32", "float16", "bfloat16"):
        return "xla"
    return "native"
