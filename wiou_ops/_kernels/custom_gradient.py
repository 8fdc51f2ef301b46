"""``tf.custom_gradient`` around a TensorFlow kernel: the wrapper ``xla``, ``graph`` and
``native`` share.

An implementation supplies two functions (the math: ``_iou.py``, or ``_multiclass.py``
with sums (G, C, 3) and ``coef`` (G, C, 2) from ``multiclass_coefficients``):

* ``forward(y_true, y_pred, weights, spec, for_gradient) -> (sums, saved)``:
  sums (G, K) in the accumulation dtype (float32; float64 for float64
  predictions), one fused pass over the inputs; ``saved``: a tuple of tensors
  for the backward (the native kernel's label masks), or ``()``;
  ``for_gradient``: whether a gradient tape records the call (else nothing
  needs saving);
* ``backward(y_true, y_pred, weights, coef, spec, saved) -> grad``: in
  y_pred's dtype, ``m·(a·y + b·(1 - y))·dp̂`` with ``coef = (a, b)`` per
  group, one elementwise pass.

``weights`` is the weight map (y's shape, float32) or None. This module wires
them into ``tf.custom_gradient``: no autodiff through the big tensors; the
scalar math after the sums is ordinary autodiff.
"""

import tensorflow as tf

from wiou_ops import _iou


class FusedIoUSums:
    """One implementation of the fused sums with their hand-written VJP."""

    def __init__(self, name, forward, backward, coefficients=None):
        self.name = name
        self._forward = forward
        self._backward = backward
        self._coefficients = coefficients or binary_coefficients

    def sums(self, y_true, y_pred, weights, spec, for_gradient=None):
        """The (G, K) sums of ``spec``; differentiable w.r.t. ``y_pred`` only.

        Labels and the weight map are data: they get no gradient.
        ``for_gradient``: whether a backward will follow; None asks the tapes.
        """
        inputs = (y_true, y_pred) if weights is None else (y_true, y_pred, weights)
        if for_gradient is None:
            for_gradient = tape_records(y_pred)

        @tf.custom_gradient
        def fused(*tensors):
            labels, predictions = tensors[0], tensors[1]
            weight_map = tensors[2] if len(tensors) == 3 else None
            sums, saved = self._forward(labels, predictions, weight_map, spec, for_gradient)

            def grad(d_sums):
                coef = self._coefficients(tf.cast(d_sums, sums.dtype), spec)
                d_pred = self._backward(labels, predictions, weight_map, coef, spec, saved)
                return (None, d_pred) + (None,) * (len(tensors) - 2)

            return sums, grad

        return fused(*inputs)


def binary_coefficients(d_sums, spec):
    """(G, 2): (a, b) per group of ``_iou``'s VJP from the sums' cotangent (G, K)."""
    return tf.matmul(d_sums, tf.constant(_iou.PROJECTION[spec.weighting], d_sums.dtype))


def multiclass_coefficients(d_sums, spec):
    """(G, C, 2): (∂/∂I, ∂/∂P) per group and class of ``_multiclass``'s VJP from the
    sums' cotangent (G, C, 3); Y is data."""
    del spec
    return d_sums[..., :2]


def tape_records(tensor):
    """Whether a gradient tape records ops on ``tensor`` (a forward-only call, such as
    Keras's evaluation, needs no residuals for a backward). Inside a tf.function, only
    tapes opened inside it count. TensorFlow's own check is not public API: if it is
    gone, assume a tape records."""
    try:
        from tensorflow.python.eager import record
        return bool(record.should_record_backprop([tensor]))
    except (ImportError, AttributeError, TypeError):
        return True
