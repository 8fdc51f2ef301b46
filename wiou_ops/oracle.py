"""The float64 NumPy oracle of every weighting: value and gradient, written out term by term.

What the tests and the benchmarks check every implementation against (NumPy only).
Inputs are taken exactly as the implementations see them (y_pred already
rounded to its dtype); the clip bounds and ε are the float32 constants the
seed class uses. Sample weights of the seed are applied as Keras applies them
to the loss map (``keras_weighted``). ``seed_loss_float64`` and ``seed_grad_error``
read large inputs in chunks (no float64 copy of the whole input).
"""

import numpy as np


def _f32(x):
    return float(np.float32(x))


def keras_weighted(values, sample_weight):
    """``(values · sample_weight, sample_weight)`` as Keras's loss reduction forms them:
    when the ranks differ by one and the longer ends in a 1-axis, that axis goes (a
    rank-1 weight gains one instead); then NumPy broadcasting."""
    w = np.asarray(sample_weight, np.float64)
    if values.ndim == w.ndim + 1 and values.shape[-1] == 1:
        if w.ndim == 1:
            w = w[..., None]
        else:
            values = values[..., 0]
    if w.ndim == values.ndim + 1 and w.shape[-1] == 1:
        if values.ndim == 1:
            values = values[..., None]
        else:
            w = w[..., 0]
    return values * w, w


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
    ws, s = (weights, None) if sample_weight is None else keras_weighted(weights, sample_weight)
    d_log_iou = ((1.0 - y) / (union + eps) - y / (inter + eps)) * ((p >= lo) & (p <= hi))
    if reduction in (None, "none"):
        return log_iou * ws, np.sum(np.asarray(upstream) * ws) * d_log_iou
    if reduction == "sum":
        factor = np.sum(ws)
    elif reduction == "mean_with_sample_weight" and s is not None:
        factor = np.sum(ws) / np.sum(s)
    else:
        factor = np.sum(ws) / ws.size
    return log_iou * factor, upstream * factor * d_log_iou


def _sigmoid(z):
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                    np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def _ratio_loss(inter, union, eps, log):
    """(L, dL/dI, dL/dU) of one IoU, float64."""
    ratio = (inter + eps) / (union + eps)
    if log:
        return -np.log(ratio), -1.0 / (inter + eps), 1.0 / (union + eps)
    return 1.0 - ratio, -1.0 / (union + eps), (inter + eps) / (union + eps) ** 2


def iou_value_and_grad(
    y_true,
    y_pred,
    *,
    weighting="seed",
    per_image=False,
    from_logits=False,
    log=True,
    weight_background=1.0,
    weight_foreground=1.0,
    epsilon=1e-7,
    weight_map=None,
    group_weight=None,
    reduction="sum_over_batch_size",
    upstream=1.0,
):
    """Every weighting and option (docs/design.md, "Semantics"), in float64, term by term.

    ``weight_map`` (y's shape) enters the sums (pixel/class); ``group_weight``
    ((B,) with per_image, else a scalar) multiplies each IoU's loss. Seed
    weighting takes neither (its sample weights are Keras's; see
    seed_value_and_grad). Returns (loss, upstream · d loss/d y_pred); for
    ``reduction="none"`` ``upstream`` has the loss's shape.
    """
    y = np.asarray(y_true, np.float64)
    x = np.asarray(y_pred, np.float64)
    shape = y.shape
    groups = shape[0] if per_image else 1
    y, x = y.reshape(groups, -1), x.reshape(groups, -1)
    eps = _f32(epsilon)
    if from_logits:
        p, q = _sigmoid(x), _sigmoid(-x)
        dp = p * q
    else:
        lo, hi = _f32(epsilon), _f32(1.0 - epsilon)
        p = np.clip(x, lo, hi)
        q = 1.0 - p
        dp = ((x >= lo) & (x <= hi)).astype(np.float64)
    s = np.ones_like(y) if weight_map is None else np.asarray(weight_map, np.float64).reshape(
        groups, -1)
    class_w = weight_background * (1.0 - y) + weight_foreground * y
    if weighting == "seed":
        m = np.ones_like(y)
    elif weighting == "pixel":
        m = s * class_w
    else:
        m = s
    inter = np.sum(m * y * p, axis=1)
    union = np.sum(m * (y + p - y * p), axis=1)
    loss, d_i, d_u = _ratio_loss(inter, union, eps, log)
    d_p = m * (d_i[:, None] * y + d_u[:, None] * (1.0 - y))  # dL_g/dp̂ per element
    if weighting == "class":
        inter_b = np.sum(m * (1.0 - y) * q, axis=1)
        union_b = np.sum(m * (1.0 - y * p), axis=1)
        loss_b, d_ib, d_ub = _ratio_loss(inter_b, union_b, eps, log)
        d_pb = m * (-d_ib[:, None] * (1.0 - y) - d_ub[:, None] * y)
        total = weight_foreground + weight_background
        loss = (weight_foreground * loss + weight_background * loss_b) / total
        d_p = (weight_foreground * d_p + weight_background * d_pb) / total
    d_p = d_p * dp
    up = np.asarray(upstream, np.float64)
    if weighting == "seed":  # the map L_g · w, reduced as Keras does without sample weights
        if reduction in (None, "none"):
            values = loss[:, None] * class_w
            d_loss = np.sum(np.broadcast_to(up, shape).reshape(groups, -1) * class_w, axis=1)
            return values.reshape(shape), (d_loss[:, None] * d_p).reshape(shape)
        factor = np.sum(class_w, axis=1) * (1.0 if reduction == "sum" else 1.0 / y.size)
        return np.sum(loss * factor), (up * factor[:, None] * d_p).reshape(shape)
    gw = np.ones(groups) if group_weight is None else np.broadcast_to(
        np.asarray(group_weight, np.float64).reshape(-1), (groups,))
    if reduction in (None, "none"):
        d_loss = np.broadcast_to(up, (groups,)) * gw
        value = loss * gw if per_image else (loss * gw)[0]
    else:
        if reduction == "sum" or not per_image:
            divisor = 1.0
        elif reduction == "mean_with_sample_weight" and group_weight is not None:
            divisor = np.sum(gw)
        else:
            divisor = groups
        value = np.sum(loss * gw) / divisor
        d_loss = up * gw / divisor
    return value, (d_loss[:, None] * d_p).reshape(shape)


def seed_loss_float64(y_true, y_pred, weight_background, weight_foreground, epsilon=1e-7,
                      chunks=16):
    """The seed loss (mean reduction) in float64, read in chunks so that no
    float64 copy of a large input is made. Returns ``(loss, (I, U, mean weight))``.

    Inputs are taken as the implementations see them (y_pred already rounded to
    its dtype); ε and the clip bounds are the float32 constants the seed uses.
    """
    lo, hi = float(np.float32(epsilon)), float(np.float32(1.0 - epsilon))
    y_all, p_all = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    inter = union = sum_y = 0.0
    for y, p in zip(np.array_split(y_all, chunks), np.array_split(p_all, chunks)):
        y = y.astype(np.float64)
        p = np.clip(p.astype(np.float64), lo, hi)
        inter += y @ p
        union += y.sum() + p.sum() - y @ p
        sum_y += y.sum()
    n = max(y_all.size, 1)
    mean_weight = (weight_background * (y_all.size - sum_y) + weight_foreground * sum_y) / n
    return -np.log((inter + lo) / (union + lo)) * mean_weight, (inter, union, mean_weight)


def seed_grad_error(y_true, y_pred, grad, sums, epsilon=1e-7, chunks=64):
    """max |grad - float64 gradient| / max |float64 gradient| of the seed loss (mean
    reduction; ``sums`` from ``seed_loss_float64``), in chunks (no float64 copy).

    The float64 gradient follows TensorFlow's clip rule: ties at ε and 1-ε pass.
    """
    inter, union, mean_weight = sums
    lo, hi = float(np.float32(epsilon)), float(np.float32(1.0 - epsilon))
    worst = scale = 0.0
    parts = (np.array_split(np.asarray(a, np.float32).reshape(-1), chunks)
             for a in (y_true, y_pred, grad))
    for y, p, g in zip(*parts):
        y, p = y.astype(np.float64), p.astype(np.float64)
        want = mean_weight * ((1 - y) / (union + lo) - y / (inter + lo)) * ((p >= lo) & (p <= hi))
        worst = max(worst, float(np.max(np.abs(g - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    return worst / scale if scale else worst


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def multiclass_value_and_grad(
    y_true,
    y_pred,
    *,
    class_weights=None,
    epsilon=1e-7,
    sparse_y_true=False,
    ignore_class=None,
    multi_label=False,
    from_logits=False,
    per_image=False,
    log=True,
    absent_classes="include",
    weight_map=None,
    group_weight=None,
    reduction="sum_over_batch_size",
    upstream=1.0,
):
    """The multi-class IoU loss (``wiou_ops._multiclass``) in float64, term by term.

    y_pred: (B, ..., C); y_true: ids (B, ...) with ``sparse_y_true``, else (B, ..., C).
    ``weight_map`` (B, ...) enters the sums; ``group_weight`` ((B,) with per_image, else
    a scalar) multiplies each group's loss. Returns (loss, upstream · d loss/d y_pred);
    for ``reduction="none"`` the per-group losses (a scalar without per_image).
    """
    x = np.asarray(y_pred, np.float64)
    classes = x.shape[-1]
    groups = x.shape[0] if per_image else 1
    x = x.reshape(groups, -1, classes)
    eps = _f32(epsilon)
    s = np.ones(x.shape[:2]) if weight_map is None else np.asarray(
        weight_map, np.float64).reshape(groups, -1)
    if sparse_y_true:
        ids = np.asarray(y_true).astype(np.int64).reshape(groups, -1)
        y = (ids[..., None] == np.arange(classes)).astype(np.float64)
        if ignore_class is not None:
            s = s * (ids != ignore_class)
    else:
        y = np.asarray(y_true, np.float64).reshape(x.shape)
        if ignore_class is not None:
            s = s * (1.0 - y[..., ignore_class])
    if not from_logits:
        lo, hi = _f32(epsilon), _f32(1.0 - epsilon)
        p = np.clip(x, lo, hi)
    elif multi_label:
        p = _sigmoid(x)
    else:
        p = _softmax(x)
    inter = np.sum(s[..., None] * y * p, axis=1)            # (G, C)
    union = np.sum(s[..., None] * (y + p - y * p), axis=1)
    label = np.sum(s[..., None] * y, axis=1)
    class_loss, d_i, d_u = _ratio_loss(inter, union, eps, log)
    w = np.ones(classes) if class_weights is None else np.asarray(class_weights, np.float64)
    w = np.broadcast_to(w, (groups, classes)).copy()
    if ignore_class is not None and ignore_class < classes:
        w[:, ignore_class] = 0.0
    if absent_classes == "skip":
        w = w * (label > 0)
    norm = np.sum(w, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    loss = np.where(norm > 0, np.sum(w * class_loss, axis=1) / safe, 0.0)
    d_class = w / safe[:, None]                                 # d loss_g / d L_gc
    # dL/dp̂ = s·(dL/dI·y + dL/dU·(1 - y)), U = Σ s·(y + p̂ - y·p̂)
    d_p = s[..., None] * (d_class * d_i)[:, None, :] * y + \
        s[..., None] * (d_class * d_u)[:, None, :] * (1.0 - y)
    gw = np.ones(groups) if group_weight is None else np.broadcast_to(
        np.asarray(group_weight, np.float64).reshape(-1), (groups,))
    up = np.asarray(upstream, np.float64)
    if reduction in (None, "none"):
        d_loss = np.broadcast_to(up, (groups,)) * gw
        value = loss * gw if per_image else (loss * gw)[0]
    else:
        divisor = groups if (per_image and reduction != "sum") else 1.0
        value = np.sum(loss * gw) / divisor
        d_loss = up * gw / divisor
    d_p = d_loss[:, None, None] * d_p
    if not from_logits:
        d_x = d_p * ((x >= lo) & (x <= hi))
    elif multi_label:
        d_x = d_p * p * (1.0 - p)
    else:
        d_x = p * (d_p - np.sum(d_p * p, axis=-1, keepdims=True))
    return value, d_x.reshape(np.shape(y_pred))
