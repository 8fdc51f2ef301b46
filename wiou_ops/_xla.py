"""The fused IoU sums and their VJP in TensorFlow ops (semantics: ``_iou.py``).

One piece of math (wrapped by ``_fused.FusedIoUSums``), two ways to run it:

* ``xla``: forward and backward are each one ``tf.function(jit_compile=True)``:
  the sums come from one fused pass over ``y_true``, ``y_pred`` (and the
  weight map), the gradient from one elementwise pass; 16-bit predictions are
  widened inside the fusion, never as a whole-tensor copy.
* ``graph``: the same functions without XLA (plain TensorFlow graph ops; its
  casts and temporaries are materialized: the portable fallback).

Both reshape the inputs to (G, n): G = batch size with ``per_image``, else 1.
"""

import tensorflow as tf

from wiou_ops import _iou
from wiou_ops._fused import FusedIoUSums

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

_BLOCK, _LEVELS = _iou.SUM_BLOCK, _iou.SUM_LEVELS


def accumulation_dtype(pred_dtype):
    """float32 for 16/32-bit predictions (no 16-bit accumulation), else float64."""
    return tf.float64 if pred_dtype == tf.float64 else tf.float32


def _plain_sum(x):
    return tf.reduce_sum(x, axis=1)


def _blocked_sum(x):
    """Row sums of a (G, n) tensor through ``_LEVELS`` levels of ``_BLOCK``-long partial sums.

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level's partial sums pass through
    an optimization barrier (``_iou.SUM_BLOCK`` says why blocks of 32). The
    ragged end of each level (fewer than ``_BLOCK`` numbers) is summed on its
    own and added last: padding to whole blocks would make XLA write the
    padded terms out.
    """
    groups = tf.shape(x, out_type=tf.int64)[0]
    tails = []
    for _ in range(_LEVELS):
        length = tf.shape(x, out_type=tf.int64)[1]
        whole = length - tf.math.floormod(length, _BLOCK)
        tails.append(tf.reduce_sum(x[:, whole:], axis=1))
        x = tf.reduce_sum(tf.reshape(x[:, :whole], [groups, -1, _BLOCK]), axis=2)
        if optimization_barrier is not None:
            (x,) = optimization_barrier(x)
    return tf.reduce_sum(x, axis=1) + tf.add_n(tails)


def _as_groups(x, spec, dtype):
    """x reshaped to (G, n) and cast to ``dtype`` (inside XLA the cast fuses)."""
    # int64 shapes: an image (or a batch) may hold more than 2^31 elements.
    if spec.per_image:
        shape = tf.shape(x, out_type=tf.int64)
        x = tf.reshape(x, tf.stack([shape[0], tf.reduce_prod(shape[1:])]))
    else:
        x = tf.reshape(x, tf.constant([1, -1], tf.int64))
    return tf.cast(x, dtype)


def _probabilities(x, spec, acc):
    """(p̂, q̂): clipped probabilities and 1 - p̂, or sigmoid(±z) for logits."""
    if spec.from_logits:
        return tf.sigmoid(x), tf.sigmoid(-x)
    # Same constants as tf.clip_by_value(p, eps, 1 - eps) in the seed class.
    lo, hi = tf.constant(spec.epsilon, acc), tf.constant(1.0 - spec.epsilon, acc)
    p = tf.clip_by_value(x, lo, hi)
    return p, 1.0 - p


def _grouped_weight(y, weights, spec, acc):
    """m (``_iou.element_weight``) with the weight map grouped like y; None for m = 1."""
    weight_map = None if weights is None else _as_groups(weights, spec, acc)
    return _iou.element_weight(y, weight_map, spec)


def _terms(y_true, y_pred, weights, spec):
    """The per-element terms of ``_iou.TERMS[spec.weighting]``, each (G, n)."""
    acc = accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    p, q = _probabilities(_as_groups(y_pred, spec, acc), spec, acc)
    return _iou.terms(y, p, q, _grouped_weight(y, weights, spec, acc), spec)


def _gradient(y_true, y_pred, weights, coef, spec):
    """``m·(a·y + b·(1 - y))·dp̂`` per element, in y_pred's dtype and shape."""
    acc = accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    x = _as_groups(y_pred, spec, acc)
    grad = _iou.vjp_factor(tf.cast(coef, acc), y, _grouped_weight(y, weights, spec, acc))
    if spec.from_logits:
        grad = grad * (tf.sigmoid(x) * tf.sigmoid(-x))
    else:
        lo, hi = tf.constant(spec.epsilon, acc), tf.constant(1.0 - spec.epsilon, acc)
        grad = tf.where((x >= lo) & (x <= hi), grad, tf.zeros_like(grad))
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def _make(name, jit):
    """(implementation, sums kernel, gradient kernel); the kernels compiled when ``jit``."""
    sum_fn = _blocked_sum if jit else _plain_sum

    def sums(y_true, y_pred, weights, spec):
        return tf.stack([sum_fn(t) for t in _terms(y_true, y_pred, weights, spec)], axis=1)

    gradient = _gradient
    if jit:
        sums = tf.function(sums, jit_compile=True, reduce_retracing=True)
        gradient = tf.function(gradient, jit_compile=True, reduce_retracing=True)

    def forward(y_true, y_pred, weights, spec, for_gradient):
        del for_gradient  # nothing to save: the backward re-reads y and p
        return sums(y_true, y_pred, weights, spec), ()

    def backward(y_true, y_pred, weights, coef, spec, saved):
        del saved
        return gradient(y_true, y_pred, weights, coef, spec)

    return FusedIoUSums(name, forward, backward), sums, gradient


# Accurate row sums of a (G, n) float32 array, compiled (inlined into a caller's XLA
# computation): for the full-size maps of Keras's reduction (``_reduction``).
ROW_SUMS = tf.function(_blocked_sum, jit_compile=True, reduce_retracing=True)

# The compiled kernels are named so that tests can read their optimized HLO.
XLA, XLA_SUMS, XLA_GRADIENT = _make("xla", jit=True)
GRAPH, _, _ = _make("graph", jit=False)
