"""The fused IoU sums and their VJP in ``keras.ops``: the kernel of every other Keras
backend (PyTorch; NumPy for evaluation).

No fused kernel here: the same sums as every implementation (``_iou.sums_terms``,
one row per IoU) and their hand-written VJP (``_iou.input_gradient``), written with
``keras.ops`` and joined by ``keras.ops.custom_gradient``::

    sums[g, k] = Σ_i term_k(y_i, p̂_i)          ∂/∂p_i = m_i·(a·y_i + b·(1 - y_i))·dp̂_i

Sums accumulate in float32 (float64 for float64 predictions) with the backend's own
reduction (pairwise in NumPy, cascaded in PyTorch on CPU). A 16-bit ``y_pred`` is cast
to float32 here (one copy; the fused TensorFlow and JAX kernels read it as it is).
"""

import keras
from keras import ops

from wiou_ops import _iou, _multiclass


def iou_sums(y_true, y_pred, weight_map, spec):
    """The (G, K) sums of ``spec`` (``_iou.SumsSpec``), with the hand-written VJP of ``_iou``.

    Fewer full-size ops than autodiff writes going back through the terms (eager
    PyTorch writes each op's result to fresh memory).
    """
    acc = _iou.accumulation_dtype(keras.backend.standardize_dtype(y_pred.dtype))
    shape = _iou.group_shape(tuple(ops.shape(y_pred)), spec.per_image)

    def grouped(x):
        return ops.reshape(ops.cast(x, acc), shape)

    y, x = grouped(y_true), grouped(y_pred)
    m = _iou.element_weight(y, None if weight_map is None else grouped(weight_map), spec)

    def forward(x):
        terms = _iou.sums_terms(y, x, m, spec, ops)
        return ops.stack([ops.sum(t, axis=1) for t in terms], axis=1)

    if keras.backend.backend() == "numpy":  # no autodiff there (custom_gradient only warns)
        return forward(x)
    projection = ops.convert_to_tensor(_iou.PROJECTION[spec.weighting], acc)

    @ops.custom_gradient
    def sums_of(x):
        def vjp(*args, upstream=None):
            # The cotangent comes positionally on TensorFlow and JAX, as ``upstream`` on
            # PyTorch (after the saved inputs): keras.ops.custom_gradient's convention.
            d_sums = args[0] if upstream is None else upstream
            coef = ops.matmul(ops.cast(d_sums, acc), projection)
            return _iou.input_gradient(coef, y, x, m, spec, ops)

        return forward(x), vjp

    return sums_of(x)


def multiclass_sums(labels, y_pred, weight_map, spec):
    """The (G, C, 3) sums of ``spec`` (``_multiclass.MultiClassSpec``) with its
    hand-written VJP (p̂ recomputed in the backward)."""
    acc = _iou.accumulation_dtype(keras.backend.standardize_dtype(y_pred.dtype))
    shape = tuple(ops.shape(y_pred))
    groups, classes = (shape[0] if spec.per_image else 1), spec.num_classes
    x = ops.reshape(ops.cast(y_pred, acc), (groups, -1, classes))
    labels = ops.reshape(labels, (groups, -1) if spec.sparse else (groups, -1, classes))
    s = None if weight_map is None else ops.reshape(ops.cast(weight_map, acc), (groups, -1))
    y = _multiclass.label_indicator(labels, spec, acc, ops)
    s = _multiclass.pixel_weight(labels, s, spec, acc, ops)

    def forward(x):
        p = _multiclass.probabilities(x, spec, ops)
        return ops.stack([ops.sum(t, axis=1) for t in _multiclass.sums_terms(y, p, s)],
                         axis=-1)

    if keras.backend.backend() == "numpy":  # no autodiff there
        return forward(x)

    @ops.custom_gradient
    def sums_of(x):
        def vjp(*args, upstream=None):
            d_sums = args[0] if upstream is None else upstream  # see iou_sums
            coef = ops.cast(d_sums, acc)[..., :2]
            return _multiclass.input_gradient(coef, y, x, s, spec, ops)

        return forward(x), vjp

    return ops.reshape(sums_of(x), (groups, classes, len(_multiclass.SUMS)))
