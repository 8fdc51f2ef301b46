"""Float64 NumPy oracle of the seed formula: value and gradient.

Inputs are taken exactly as the implementations see them (y_pred already
rounded to its dtype); the clip bounds and ε are the float32 constants the
seed class uses. Sample weights must have y's shape (or be None).
"""

import numpy as np


def _f32(x):
    return float(np.float32(x))


def seed_value_and_grad(
    y_true,
    y_pred,
    *,
    weight_background=1.0,
    weight_foreground=1.0,
    epsilon=1e-7,
    sample_weight=None,
    reduction="sum_over_batch_size",
    upstream=1.0,
):
    """Returns (loss, d loss/d y_pred · upstream) in float64.

    ``upstream`` is a scalar for reduced losses, or an array of y's shape for
    ``reduction="none"`` (then ``loss`` is the per-pixel map).
    """
    y = np.asarray(y_true).astype(np.float64)
    p = np.asarray(y_pred).astype(np.float64)
    lo, hi, eps = _f32(epsilon), _f32(1.0 - epsilon), _f32(epsilon)
    p_hat = np.clip(p, lo, hi)
    inter = np.sum(y * p_hat)
    union = np.sum(y + p_hat - y * p_hat)
    log_iou = -np.log((inter + eps) / (union + eps))
    weights = weight_background * (1.0 - y) + weight_foreground * y
    s = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    ws = weights * s
    d_log_iou = ((1.0 - y) / (union + eps) - y / (inter + eps)) * ((p >= lo) & (p <= hi))
    if reduction in (None, "none"):
        return log_iou * ws, np.sum(np.asarray(upstream) * ws) * d_log_iou
    if reduction == "sum":
        factor = np.sum(ws)
    elif reduction == "mean_with_sample_weight" and sample_weight is not None:
        factor = np.sum(ws) / np.sum(s)
    else:
        factor = np.sum(ws) / y.size
    return log_iou * factor, upstream * factor * d_log_iou
