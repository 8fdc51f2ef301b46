"""The custom-gradient wrapper shared by every TensorFlow implementation.

An implementation supplies two functions (semantics in ``_iou.py``):

* ``forward(y_true, y_pred, weights, spec) -> sums``: (G, K) in the
  accumulation dtype (float32; float64 for float64 predictions), one fused
  pass over the inputs;
* ``backward(y_true, y_pred, weights, coef, spec) -> grad``: in y_pred's
  dtype, ``m·(a·y + b·(1 - y))·dp̂`` with ``coef = (a, b)`` per group, one
  elementwise pass.

``weights`` is the weight map (y's shape, float32) or None. This module wires
them into ``tf.custom_gradient``: no autodiff through the big tensors, no
saved intermediates; the scalar math after the sums is ordinary autodiff.
"""

import tensorflow as tf

from wiou_ops import _iou


class FusedIoUSums:
    """One implementation of the fused sums with their hand-written VJP."""

    def __init__(self, name, forward, backward):
        self.name = name
        self._forward = forward
        self._backward = backward

    def sums(self, y_true, y_pred, weights, spec):
        """The (G, K) sums of ``spec``; differentiable w.r.t. ``y_pred`` only.

        Labels and the weight map are data: they get no gradient.
        """
        inputs = (y_true, y_pred) if weights is None else (y_true, y_pred, weights)

        @tf.custom_gradient
        def fused(*tensors):
            labels, predictions = tensors[0], tensors[1]
            weight_map = tensors[2] if len(tensors) == 3 else None
            sums = self._forward(labels, predictions, weight_map, spec)

            def grad(d_sums):
                projection = tf.constant(_iou.PROJECTION[spec.weighting], sums.dtype)
                coef = tf.matmul(tf.cast(d_sums, sums.dtype), projection)
                d_pred = self._backward(labels, predictions, weight_map, coef, spec)
                return (None, d_pred) + (None,) * (len(tensors) - 2)

            return sums, grad

        return fused(*inputs)
