"""The fused IoU sums and their VJP in TensorFlow ops (the math: ``_iou.py``).

One piece of math (wrapped by ``custom_gradient.FusedIoUSums``), two ways to run it:

* ``xla``: forward and backward are each one ``tf.function(jit_compile=True)``:
  the sums come from one fused pass over ``y_true``, ``y_pred`` (and the
  weight map), the gradient from one elementwise pass; 16-bit predictions are
  widened inside the fusion, never as a whole-tensor copy.
* ``graph``: the same functions without XLA (plain TensorFlow graph ops; its
  casts and temporaries are materialized: the portable fallback).

Both reshape the inputs to (G, n): G = batch size with ``per_image``, else 1.
"""

import types

import tensorflow as tf

from wiou_ops import _iou, _multiclass
from wiou_ops._kernels.custom_gradient import FusedIoUSums, multiclass_coefficients

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


def _where(condition, x, y):
    # tf.where does not convert a Python scalar to the other branch's dtype.
    return tf.where(condition, x, tf.cast(y, x.dtype))


def _softmax(x, axis=-1):
    return tf.nn.softmax(x, axis=axis)


def _sum(x, axis=None, keepdims=False):
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def _arange(n, dtype):
    return tf.range(n, dtype=dtype)


def _constant(values, dtype):
    return tf.constant(values, dtype)


# The array namespace ``_iou`` and ``_multiclass`` compute with (their docstrings say
# which names).
TF_OPS = types.SimpleNamespace(clip=tf.clip_by_value, sigmoid=tf.sigmoid, where=_where,
                               log=tf.math.log, softmax=_softmax, cast=tf.cast, sum=_sum,
                               arange=_arange, convert_to_tensor=_constant)


def _plain_sum(x):
    return tf.reduce_sum(x, axis=1)


def blocked_row_sums(x):
    """Row sums (over axis 1) of a (G, n) or (G, n, ...) tensor through ``_LEVELS`` levels
    of ``_BLOCK``-long partial sums.

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level's partial sums pass through
    an optimization barrier (``_iou.SUM_BLOCK`` says why blocks of 32). The
    ragged end of each level (fewer than ``_BLOCK`` numbers) is summed on its
    own and added last: padding to whole blocks would make XLA write the
    padded terms out.
    """
    groups = tf.shape(x, out_type=tf.int64)[0]
    block_shape = [groups, -1, _BLOCK]
    if x.shape.rank > 2:  # (G, n, ...): blocks along n, the trailing axes kept
        block_shape = tf.concat([tf.stack([groups, -1, _BLOCK]),
                                 tf.shape(x, out_type=tf.int64)[2:]], axis=0)
    tails = []
    for _ in range(_LEVELS):
        length = tf.shape(x, out_type=tf.int64)[1]
        whole = length - tf.math.floormod(length, _BLOCK)
        tails.append(tf.reduce_sum(x[:, whole:], axis=1))
        x = tf.reduce_sum(tf.reshape(x[:, :whole], block_shape), axis=2)
        if optimization_barrier is not None:
            (x,) = optimization_barrier(x)
    return tf.reduce_sum(x, axis=1) + tf.add_n(tails)


def accumulation_dtype(pred_dtype):
    return tf.as_dtype(_iou.accumulation_dtype(pred_dtype.name))


def _as_groups(x, spec, dtype):
    """x viewed as (G, n) (``_iou.group_shape``) and cast to ``dtype`` (the cast fuses)."""
    # Static dimensions stay Python ints (a constant shape, no shape ops at run time);
    # unknown ones come from tf.shape. int64 either way: an image (or a batch) may hold
    # more than 2^31 elements.
    if x.shape.rank is None:  # compiled kernels relax their input shapes, rank included
        shape = tf.shape(x, out_type=tf.int64)
        dims = [shape[0], tf.reduce_prod(shape[1:])] if spec.per_image else [tf.size(
            x, out_type=tf.int64)]
    else:
        dims = [dim if dim is not None else tf.shape(x, out_type=tf.int64)[axis]
                for axis, dim in enumerate(x.shape.as_list())]
    shape = [tf.constant(dim, tf.int64) if isinstance(dim, int) else dim
             for dim in _iou.group_shape(dims, spec.per_image)]
    return tf.cast(tf.reshape(x, tf.stack(shape)), dtype)


def _grouped(y_true, y_pred, weights, spec):
    """(y, x, m) as (G, n) arrays in the accumulation dtype; m None for m = 1."""
    acc = accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    weight_map = None if weights is None else _as_groups(weights, spec, acc)
    return y, _as_groups(y_pred, spec, acc), _iou.element_weight(y, weight_map, spec)


def _gradient(y_true, y_pred, weights, coef, spec):
    """``_iou.input_gradient`` per element, in y_pred's dtype and shape."""
    y, x, m = _grouped(y_true, y_pred, weights, spec)
    grad = _iou.input_gradient(tf.cast(coef, x.dtype), y, x, m, spec, TF_OPS)
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def _make(name, jit):
    """(implementation, sums kernel, gradient kernel); the kernels compiled when ``jit``."""
    sum_fn = blocked_row_sums if jit else _plain_sum

    def sums(y_true, y_pred, weights, spec):
        y, x, m = _grouped(y_true, y_pred, weights, spec)
        return tf.stack([sum_fn(t) for t in _iou.sums_terms(y, x, m, spec, TF_OPS)], axis=1)

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


def _multiclass_grouped(labels, y_pred, weights, spec):
    """(y, x, s): y and x (G, n, C), s (G, n) or None, in the accumulation dtype
    (``_multiclass`` says what y and s are)."""
    acc = accumulation_dtype(y_pred.dtype)
    if not spec.per_image:
        groups = tf.constant(1, tf.int64)
    elif y_pred.shape.rank is not None and y_pred.shape[0] is not None:
        groups = tf.constant(y_pred.shape[0], tf.int64)
    else:
        groups = tf.shape(y_pred, out_type=tf.int64)[0]
    classes = tf.constant(spec.num_classes, tf.int64)
    pixels = tf.stack([groups, -1])
    x = tf.cast(tf.reshape(y_pred, tf.stack([groups, -1, classes])), acc)
    labels = tf.reshape(labels, pixels if spec.sparse else tf.stack([groups, -1, classes]))
    weight_map = None if weights is None else tf.cast(tf.reshape(weights, pixels), acc)
    return (_multiclass.label_indicator(labels, spec, acc, TF_OPS), x,
            _multiclass.pixel_weight(labels, weight_map, spec, acc, TF_OPS))


def _multiclass_sums(labels, y_pred, weights, spec, row_sums):
    y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
    p = _multiclass.probabilities(x, spec, TF_OPS)
    # One reduction of the stacked terms: XLA then computes p̂ once per element (three
    # separate reductions each recomputed the softmax).
    return row_sums(tf.stack(_multiclass.sums_terms(y, p, s), axis=-1))


def _multiclass_gradient(labels, y_pred, weights, coef, spec):
    y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
    grad = _multiclass.input_gradient(tf.cast(coef, x.dtype), y, x, s, spec, TF_OPS)
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def _make_multiclass(name, jit):
    """The multi-class (implementation, sums kernel, gradient kernel), as ``_make``."""
    row_sums = blocked_row_sums if jit else _plain_sum

    def sums(labels, y_pred, weights, spec):
        return _multiclass_sums(labels, y_pred, weights, spec, row_sums)

    gradient = _multiclass_gradient
    if jit:
        sums = tf.function(sums, jit_compile=True, reduce_retracing=True)
        gradient = tf.function(gradient, jit_compile=True, reduce_retracing=True)

    def forward(labels, y_pred, weights, spec, for_gradient):
        del for_gradient  # the backward recomputes p̂ from y_pred
        return sums(labels, y_pred, weights, spec), ()

    def backward(labels, y_pred, weights, coef, spec, saved):
        del saved
        return gradient(labels, y_pred, weights, coef, spec)

    return FusedIoUSums(name, forward, backward, coefficients=multiclass_coefficients), sums, \
        gradient


# Accurate row sums of a (G, n) float32 array, compiled (inlined into a caller's XLA
# computation): for the full-size maps of Keras's reduction (``_common.reduction``).
ROW_SUMS = tf.function(blocked_row_sums, jit_compile=True, reduce_retracing=True)

# The compiled kernels are named so that tests can read their optimized HLO.
XLA, XLA_SUMS, XLA_GRADIENT = _make("xla", jit=True)
GRAPH, _, _ = _make("graph", jit=False)
MULTICLASS_XLA, MULTICLASS_XLA_SUMS, MULTICLASS_XLA_GRADIENT = _make_multiclass("xla", jit=True)
MULTICLASS_GRAPH, _, _ = _make_multiclass("graph", jit=False)
