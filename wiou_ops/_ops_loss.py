"""The loss on every other Keras backend (PyTorch; NumPy for evaluation): ``keras.ops``.

No fused kernel here: the same sums as every implementation (``_iou.terms``,
one row per IoU) and their hand-written VJP (``_iou.vjp_factor``), written with
``keras.ops`` and joined by ``keras.ops.custom_gradient``. The options, the
reduction and the numbers are those of the fused backends (``losses.sums_plan``
and ``losses.loss_from_sums``)::

    p̂ = clip(p, ε, 1-ε)  (from_logits: sigmoid(z))     sums[g, k] = Σ_i term_k(y_i, p̂_i)

so ``WeightedIoULoss`` is a drop-in for the seed class on these backends too, and
the other weightings work there. Sums accumulate in float32 (float64 for float64
predictions) with the backend's own reduction (pairwise in NumPy, cascaded in
PyTorch on CPU). The clip's gradient passes at ε and 1-ε, the rule of DESIGN.md.
A 16-bit ``y_pred`` is cast to float32 here (one copy; the fused
backends read it as it is). ``cross_replica`` has nothing to reduce on these
backends: Keras's distribution API is JAX's.
"""

import keras
from keras import ops

from wiou_ops import _dispatch, _iou, losses


def as_inputs(y_true, y_pred, per_image=False):
    """Tensors of the backend with checked dtypes and shapes (also the JAX backend's)."""
    y_pred = ops.convert_to_tensor(y_pred)
    pred_dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not pred_dtype.startswith(("float", "bfloat")):
        raise TypeError(
            "y_pred must be a floating tensor of probabilities "
            f"(float16, bfloat16, float32 or float64), got dtype {pred_dtype}.")
    y_true = ops.convert_to_tensor(y_true)
    true_dtype = keras.backend.standardize_dtype(y_true.dtype)
    if not true_dtype.startswith(("float", "bfloat", "int", "uint", "bool")):
        raise TypeError(f"y_true must be a float, integer or bool tensor, got dtype "
                        f"{true_dtype}.")
    true_shape, pred_shape = tuple(ops.shape(y_true)), tuple(ops.shape(y_pred))
    if true_shape != pred_shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true.shape={true_shape} "
            f"and y_pred.shape={pred_shape}. (A mask of shape (B, H, W) for predictions "
            "of shape (B, H, W, 1) needs y_true[..., None].)")
    if per_image and len(pred_shape) < 2:
        raise ValueError(
            "per_image=True needs a batch axis and at least one more: y_pred must have "
            f"rank >= 2, got y_pred.shape={pred_shape}.")
    return y_true, y_pred


def _forward(x, y, m, spec):
    """The sums (G, K) of ``_iou.terms`` and p̂, q̂ (arrays (G, n) in the accumulation dtype;
    q̂ only where the terms or the logits' gradient use it, else None)."""
    if spec.from_logits:
        p, q = ops.sigmoid(x), ops.sigmoid(-x)
    else:
        p = ops.clip(x, spec.epsilon, 1.0 - spec.epsilon)
        q = 1.0 - p if spec.weighting == "class" else None
    sums = ops.stack([ops.sum(t, axis=1) for t in _iou.terms(y, p, q, m, spec)], axis=1)
    return sums, p, q


def iou_sums(y_true, y_pred, weight_map, spec):
    """The (G, K) sums of ``spec`` (``_iou.SumsSpec``), with the hand-written VJP of ``_iou``.

    ``∂/∂p_i = m_i·(a·y_i + b·(1 - y_i))·dp̂_i`` with ``(a, b) = d_sums·PROJECTION`` per group:
    four full-size elementwise ops, fewer than PyTorch's autograd writes going back through
    the terms (this CPU, 16x512x512x1 float32 forward+backward: 15.2 ms with autograd,
    13.1 ms with this VJP and the lazy q̂).
    """
    acc = "float64" if keras.backend.standardize_dtype(y_pred.dtype) == "float64" else "float32"
    groups = ops.shape(y_pred)[0] if spec.per_image else 1

    def grouped(x):
        return ops.reshape(ops.cast(x, acc), (groups, -1))

    y, x = grouped(y_true), grouped(y_pred)
    m = _iou.element_weight(y, None if weight_map is None else grouped(weight_map), spec)
    if keras.backend.backend() == "numpy":  # no autodiff there (custom_gradient only warns)
        return _forward(x, y, m, spec)[0]
    projection = ops.convert_to_tensor(_iou.PROJECTION[spec.weighting], acc)

    @ops.custom_gradient
    def sums_of(x):
        sums, p, q = _forward(x, y, m, spec)

        def vjp(*args, upstream=None):
            # The cotangent comes positionally on TensorFlow and JAX, as ``upstream`` on
            # PyTorch (after the saved inputs): keras.ops.custom_gradient's convention.
            d_sums = args[0] if upstream is None else upstream
            coef = ops.matmul(ops.cast(d_sums, acc), projection)
            a, b = coef[:, 0:1], coef[:, 1:2]
            # _iou.vjp_factor as b + (a - b)·y: two full-size ops instead of four (eager
            # PyTorch writes each to fresh memory).
            factor = b + (a - b) * y
            if m is not None:
                factor = m * factor
            if spec.from_logits:
                return factor * (p * q)
            # The clip passes the gradient exactly where it left x as it was (ties at ε and
            # 1-ε included, NaN excluded): one comparison instead of _iou.clip_passes's three.
            return ops.where(ops.equal(p, x), factor, 0.0)

        return sums, vjp

    return sums_of(x)


def compute(y_true, y_pred, sample_weight, mask, options):
    y_true, y_pred = as_inputs(y_true, y_pred, options["per_image"])
    if options["check_inputs"]:
        check_values(y_true, y_pred, sample_weight, options)
    _dispatch.select_ops(options["implementation"])
    spec, weight_map, group_weight = losses.sums_plan(y_true, sample_weight, mask, options)
    sums = iou_sums(y_true, y_pred, weight_map, spec)
    return losses.loss_from_sums(sums, y_true, y_pred, sample_weight, mask, group_weight,
                                 options)


def _all(condition):
    return bool(ops.convert_to_numpy(ops.all(condition)))


def check_values(y_true, y_pred, sample_weight, options):
    """``check_inputs=True``: the values, on the host; they must be concrete (eager)."""
    y = ops.cast(y_true, "float32")
    if not _all(ops.logical_and(y >= 0, y <= 1)):
        raise ValueError("y_true must be in [0, 1] (check_inputs=True).")
    if options["from_logits"]:
        if not _all(ops.isfinite(y_pred)):
            raise ValueError("y_pred (logits) must be finite (check_inputs=True).")
    elif not _all(ops.logical_and(y_pred >= 0, y_pred <= 1)):
        raise ValueError("y_pred must be probabilities in [0, 1] (from_logits=False; "
                         "check_inputs=True).")
    if sample_weight is not None:
        weight = ops.cast(sample_weight, "float32")
        if not _all(ops.logical_and(ops.isfinite(weight), weight >= 0)):
            raise ValueError("sample_weight must be finite and >= 0 (check_inputs=True).")
