"""Fused seed-mode IoU sums and their hand-written gradient in TensorFlow ops.

One piece of math (wrapped by ``_fused.FusedSeedIoU``), two ways to run it:

* ``xla``: forward and backward are each one ``tf.function(jit_compile=True)``;
  the three sums come from one fused pass over ``y_true`` and ``y_pred``, the
  gradient from one elementwise pass.
* ``graph``: the same functions without XLA (plain TensorFlow graph ops).

Notation (``p̂ = clip(p, ε, 1-ε)``)::

    I  = Σ y·p̂                 (intersection)
    U  = Σ (y + p̂ - y·p̂)       (union)
    Sy = Σ y                   (needed for the seed's class-weight map)
    L  = -log((I + ε) / (U + ε))

    ∂L/∂p_i = [ (1 - y_i)/(U + ε) - y_i/(I + ε) ] · 1[ε ≤ p_i ≤ 1-ε]

The indicator is TensorFlow's ``clip_by_value`` gradient rule (ties pass).
The backward needs only ``y``, ``p`` and the scalar sums: no autodiff through
the forward, no saved intermediates.
"""

import tensorflow as tf

from wiou_ops._fused import FusedSeedIoU

try:  # XLA-only op; keeps XLA from merging the levels of a blocked sum.
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier
except ImportError:  # pragma: no cover - very old or very new TensorFlow
    optimization_barrier = None


def _barrier_gradient(op, *grads):
    del op
    return grads  # the barrier is an identity


try:
    # tf.function builds a gradient for its body whenever a tape watches the
    # call (even one that custom_gradient then ignores); TensorFlow registers
    # none for this op.
    tf.RegisterGradient("XlaOptimizationBarrier")(_barrier_gradient)
except KeyError:  # already registered by someone else
    pass

# Block length of the blocked float32 sums: each level adds at most this many
# numbers in sequence, so the rounding error stays ~1e-7 even at 1e8 elements.
_BLOCK = 256
_LEVELS = 3  # after 3 levels, 1e8 elements leave 6 partial sums


def accumulation_dtype(pred_dtype):
    """float32 for 16/32-bit predictions (no 16-bit accumulation), else float64."""
    return tf.float64 if pred_dtype == tf.float64 else tf.float32


def _plain_sum(x):
    return tf.reduce_sum(x)


def _blocked_sum(x):
    """Sum of a 1-D tensor through ``_LEVELS`` levels of ``_BLOCK``-long partial sums.

    XLA:CPU adds a flat float32 reduction nearly in sequence (relative error
    ~1e-5 at 1e8 elements) and folds nested reductions back into one, so each
    level's partial sums pass through an optimization barrier. Zero padding to
    a whole block works for dynamic shapes and adds nothing to the sum.
    """
    for _ in range(_LEVELS):
        pad = tf.math.floormod(-tf.size(x), _BLOCK)
        x = tf.reduce_sum(tf.reshape(tf.pad(x, [[0, pad]]), [-1, _BLOCK]), 1)
        if optimization_barrier is not None:
            (x,) = optimization_barrier(x)
    return tf.reduce_sum(x)


def _clip_bounds(epsilon, dtype):
    # Same constants as tf.clip_by_value(p, eps, 1 - eps) in the seed class.
    return tf.constant(epsilon, dtype), tf.constant(1.0 - epsilon, dtype)


def _seed_terms(y_true, y_pred, epsilon):
    """Per-element terms of I, U and Sy, in the accumulation dtype, flattened."""
    acc = accumulation_dtype(y_pred.dtype)
    y = tf.cast(tf.reshape(y_true, [-1]), acc)
    lo, hi = _clip_bounds(epsilon, acc)
    p = tf.clip_by_value(tf.cast(tf.reshape(y_pred, [-1]), acc), lo, hi)
    yp = y * p
    return yp, y + p - yp, y


def _seed_gradient(y_true, y_pred, sums, epsilon, upstream):
    """Upstream · ∂L/∂y_pred, one elementwise pass, in y_pred's dtype."""
    acc = accumulation_dtype(y_pred.dtype)
    y = tf.cast(y_true, acc)
    p = tf.cast(y_pred, acc)
    lo, hi = _clip_bounds(epsilon, acc)
    eps = tf.constant(epsilon, acc)
    inv_i = upstream / (sums[0] + eps)
    inv_u = upstream / (sums[1] + eps)
    grad = (1.0 - y) * inv_u - y * inv_i
    in_range = tf.logical_and(p >= lo, p <= hi)
    return tf.cast(tf.where(in_range, grad, tf.zeros_like(grad)), y_pred.dtype)


def _make_seed_sums(sum_fn):
    def seed_sums(y_true, y_pred, epsilon):
        return tf.stack([sum_fn(t) for t in _seed_terms(y_true, y_pred, epsilon)])

    return seed_sums


def _make(name, jit):
    forward = _make_seed_sums(_blocked_sum if jit else _plain_sum)
    backward = _seed_gradient
    if jit:
        forward = tf.function(forward, jit_compile=True, reduce_retracing=True)
        backward = tf.function(backward, jit_compile=True, reduce_retracing=True)
    return FusedSeedIoU(name, forward, backward)


XLA = _make("xla", jit=True)
GRAPH = _make("graph", jit=False)
