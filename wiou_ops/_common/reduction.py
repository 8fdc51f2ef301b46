"""From the fused sums to Keras's reduced loss, exact at any size.

``sums_plan`` says what the kernels sum (and where sample weights and masks go);
``loss_from_sums`` turns the (G, K) sums into the loss: the per-group IoU losses
(``_iou.group_losses``), then Keras's reduction with sample weights and masks.

The reduction has the same semantics as ``keras.losses.Loss.__call__`` (its broadcasting of
sample weights and masks included), with two differences that matter past a
few million elements:

* counts are exact integers (a Python int for static shapes, int64 at run
  time), rounded once to the loss dtype where they divide. Keras multiplies
  the shape in int32, which wraps past 2^31 elements;
* every sum over a full-size map goes through the backend's accurate group sums
  (``group_sums``: blocked float32 sums on XLA:CPU, staged ones on TPU and GPU, over the
  map in its own shape), not a flat float32 sum, which XLA:CPU adds nearly in sequence
  (relative error ~1e-5 at 1e5 elements).

Backend-neutral: ``keras.ops`` only; the backend supplies ``group_sums`` and, under
tf.distribute, the replica count.
"""

from keras import ops

from wiou_ops import _iou, _multiclass
from wiou_ops._common import options as _options


def plain_group_sums(x, groups):
    """(groups,): x summed over every axis but the leading one (its ``groups`` entries;
    over every axis for groups = 1), with the backend's own reduction (small arrays)."""
    return ops.sum(ops.reshape(x, (groups, -1)), axis=1)


def element_count(shape):
    """Number of elements of a tensor of ``shape`` (``ops.shape``): exact.

    A Python int when every dimension is static, else an int64 tensor.
    """
    count = 1
    for dim in shape:
        count = count * (dim if isinstance(dim, int) else ops.cast(dim, "int64"))
    return count


def as_float(count, dtype):
    """An exact count in the loss dtype (one rounding)."""
    return float(count) if isinstance(count, int) else ops.cast(count, dtype)


def total(x, group_sums):
    """Σ x over every element, with ``group_sums``."""
    return group_sums(x, 1)[0]


def squeeze_or_expand_to_same_rank(x1, x2):
    """Keras's rule: if the ranks differ by exactly one and the longer one ends in a
    1-axis, that axis goes (a rank-1 shorter one gains a trailing axis instead)."""
    rank1, rank2 = len(x1.shape), len(x2.shape)
    if rank1 == rank2 + 1 and x1.shape[-1] == 1:
        if rank2 == 1:
            x2 = ops.expand_dims(x2, axis=-1)
        else:
            x1 = ops.squeeze(x1, axis=-1)
    if rank2 == rank1 + 1 and x2.shape[-1] == 1:
        if rank1 == 1:
            x1 = ops.expand_dims(x1, axis=-1)
        else:
            x2 = ops.squeeze(x2, axis=-1)
    return x1, x2


def _mask_as_weight(sample_weight, mask, reduction, dtype, group_sums):
    """Keras's ``apply_mask``: the mask folded into the sample weight.

    For the mean reductions, valid entries weigh ``total / valid`` so that the
    mean runs over the valid ones.
    """
    if reduction in ("mean", "sum_over_batch_size"):
        valid = total(ops.cast(mask, dtype), group_sums)  # may be 0
        weight = ops.divide_no_nan(as_float(element_count(ops.shape(mask)), dtype), valid)
        float_mask = ops.where(ops.cast(mask, "bool"), weight, ops.zeros((), dtype))
    else:
        float_mask = ops.cast(mask, dtype)
    if sample_weight is None:
        return float_mask
    float_mask, sample_weight = squeeze_or_expand_to_same_rank(float_mask, sample_weight)
    return sample_weight * float_mask


def reduce_weighted_values(values, sample_weight=None, mask=None,
                           reduction="sum_over_batch_size", dtype="float32", *,
                           group_sums=plain_group_sums, group_factor=None, replicas=1):
    """Keras's ``reduce_weighted_values``, exact at any size.

    ``loss = Σ values·sample_weight / divisor``, divisor: 1 ("sum"), the element
    count of the weighted values ("sum_over_batch_size", "mean"), or Σ
    sample_weight ("mean_with_sample_weight"); "none" returns the weighted
    values. A mask acts as Keras folds it into the sample weight.

    ``group_factor`` (G,): row g of the values (their leading axis when G > 1)
    is multiplied by ``group_factor[g]`` after the row sums, so that a map
    ``L_g · w`` is reduced as ``Σ_g L_g · Σ_i w_i`` and the sums of ``w`` (data)
    are never differentiated. ``replicas``: see ``scale_loss_for_distribution``.
    """
    values = ops.cast(values, dtype)
    if mask is not None:
        sample_weight = _mask_as_weight(
            None if sample_weight is None else ops.cast(sample_weight, dtype),
            mask, reduction, dtype, group_sums)
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, dtype)
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        values = values * sample_weight
    groups = 1 if group_factor is None else int(group_factor.shape[0])
    if groups > 1 and (len(values.shape) == 0 or values.shape[0] != groups):
        raise ValueError(
            f"sample_weight of shape {tuple(sample_weight.shape)} changes the loss map's "
            f"leading (batch) axis to {tuple(values.shape)}: with per_image=True it must "
            f"broadcast within each of the {groups} images.")
    if reduction in (None, "none") or tuple(values.shape) in ((), (0,)):
        if group_factor is None:
            return values
        if groups == 1:
            return group_factor[0] * values
        return ops.reshape(group_factor, (groups,) + (1,) * (len(values.shape) - 1)) * values
    row_totals = group_sums(values, groups)
    loss = ops.sum(row_totals if group_factor is None else row_totals * group_factor)
    if reduction == "sum":
        return loss
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = total(sample_weight, group_sums)
    else:
        divisor = as_float(element_count(ops.shape(values)), dtype)
    return scale_loss_for_distribution(ops.divide_no_nan(loss, divisor), replicas)


def scale_loss_for_distribution(value, replicas):
    """Divided by the replica count under a tf.distribute strategy, as Keras scales a
    reduced loss (the optimizer then sums the replicas' gradients); else as it is."""
    if replicas > 1:
        value = value * ops.cast(1.0 / replicas, value.dtype)
    return value


def sums_plan(y_true, sample_weight, mask, options):
    """``(SumsSpec, weight map or None, per-group loss weight or None)`` for the fused sums.

    Seed weighting keeps Keras's own reduction of sample weights and masks (no map in
    the sums); pixel and class weighting split them with ``split_weights``.
    """
    spec = _iou.SumsSpec.from_options(options)
    if spec.weighting == "seed":
        return spec, None, None
    return (spec, *split_weights(tuple(y_true.shape), ops.shape(y_true), sample_weight, mask,
                                 spec.per_image))


def split_weights(shape, dynamic_shape, sample_weight, mask, per_image):
    """Pixel/class weighting: ``(weight map for the sums or None, loss weight per group or None)``.

    A ``sample_weight`` is aligned with y_true's leading axes (a (B,) weight
    acts as (B, 1, 1, 1), a (B, H, W) one as (B, H, W, 1)) and must broadcast
    to y_true's shape. Where it is constant over each IoU's pixels (a scalar;
    a per-sample weight with ``per_image=True``) it multiplies that IoU's loss,
    as Keras does: inside the sums it would cancel in I/U. Where it varies
    inside an IoU, or has y_true's full shape, it is a weight map inside the
    sums (0 = ignore the pixel).
    A Keras mask is always a 0/1 weight map. ``shape``: the static shape of the
    labelled elements (None for unknown dimensions), ``dynamic_shape`` the same from
    ``ops.shape``.
    """
    rank = len(shape)
    weight_map, group_weight = None, None
    for name, weight in (("sample_weight", sample_weight), ("mask", mask)):
        if weight is None:
            continue
        weight = ops.cast(weight, "float32")
        full_shape = tuple(weight.shape) == shape  # always a map, even 1x1 images
        if len(weight.shape) > rank:
            raise ValueError(
                f"{name} of shape {tuple(weight.shape)} has more axes than y_true of shape "
                f"{shape}; it must broadcast to y_true's shape.")
        while len(weight.shape) < rank:
            weight = ops.expand_dims(weight, -1)
        for w_dim, y_dim in zip(weight.shape, shape):
            if w_dim not in (1, None) and y_dim is not None and w_dim != y_dim:
                raise ValueError(
                    f"{name} of shape {tuple(weight.shape)} (trailing axes added) does not "
                    f"broadcast to y_true's shape {shape}.")
        constant_per_group = not full_shape and all(
            d == 1 for d in weight.shape[1 if per_image else 0:])
        if name == "sample_weight" and constant_per_group:
            if per_image:
                group_weight = ops.broadcast_to(ops.reshape(weight, (-1,)),
                                                dynamic_shape[:1])
            else:
                group_weight = ops.reshape(weight, ())
            continue
        weight = ops.broadcast_to(weight, dynamic_shape)
        weight_map = weight if weight_map is None else weight_map * weight
    return weight_map, group_weight


def _seed_reduction(losses, sums, y_true, y_pred, sample_weight, mask, options, count,
                    group_sums, replicas):
    """Seed weighting: Keras's reduction of the map ``L · (w_b·(1 - y) + w_f·y)``.

    With sample weights, a mask or ``reduction="none"`` the weight map is
    reduced as Keras reduces it (exact seed semantics for every broadcast, at
    the cost of one pass over y_true; ``group_sums`` sums it accurately);
    otherwise the total weight per group is ``w_b·(n - Sy) + w_f·Sy`` from the
    fused pass's Sy, with n the exact element count.
    """
    dtype = losses.dtype
    w_b, w_f = options["weight_background"], options["weight_foreground"]
    reduction = options["reduction"]
    if reduction in (None, "none") or sample_weight is not None or mask is not None:
        y = ops.cast(y_true, dtype)
        weight = w_b * (1.0 - y) + w_f * y
        # Keras's reductions are linear in the map: Σ_g L_g · reduce(w of group g).
        return reduce_weighted_values(
            weight, sample_weight=sample_weight, mask=mask, reduction=reduction, dtype=dtype,
            group_sums=group_sums, group_factor=losses, replicas=replicas)
    groups = int(sums.shape[0])
    if count is None:
        count = element_count(ops.shape(y_pred))
    if isinstance(count, int):
        group_size = float(count // max(groups, 1))  # per-image groups are equal
    else:
        group_size = ops.cast(count, dtype) / max(groups, 1)
    loss = ops.sum(losses * _iou.seed_group_weight(sums[:, 2], group_size, w_b, w_f))
    if reduction == "sum":
        return loss
    return scale_loss_for_distribution(ops.divide_no_nan(loss, as_float(count, dtype)),
                                       replicas)


def loss_from_sums(sums, y_true, y_pred, sample_weight, mask, group_weight, options, *,
                   count=None, group_sums=plain_group_sums, replicas=1):
    """The reduced loss (or unreduced for ``reduction="none"``) from the fused sums (G, K).

    Seed weighting: see ``_seed_reduction`` (the per-pixel map for "none").
    Pixel/class weighting: Keras's reduction of the per-group losses, (B,)
    with ``per_image`` (a scalar otherwise), weighted by ``group_weight``.
    ``count``: the exact element count behind ``sums`` (a Python int or an
    integer tensor) when they were all-reduced across replicas
    (``cross_replica``), else None for y_pred's own size. ``group_sums``: the
    backend's accurate sums per group of a map in its own shape (``plain_group_sums``
    says what), for full-size maps. ``replicas``:
    the number of tf.distribute replicas in sync (1 elsewhere).

    Under tf.distribute Keras divides a reduced map by the number of replicas
    (the optimizer then sums the replicas' gradients) but leaves a scalar loss
    as it is. One IoU for the whole batch is such a scalar, so it is scaled
    here as Keras scales the seed's map: the update is then the mean of the
    replicas' IoU gradients, or, with ``cross_replica``, the global IoU's.
    """
    spec = _iou.SumsSpec.from_options(options)
    losses = _iou.group_losses(sums, spec, options["log"], ops.log)
    if options["weighting"] == "seed":
        return _seed_reduction(losses, sums, y_true, y_pred, sample_weight, mask, options,
                               count, group_sums, replicas)
    if options["per_image"]:
        return reduce_weighted_values(
            losses, sample_weight=group_weight, reduction=options["reduction"],
            dtype=losses.dtype, replicas=replicas)
    loss = reduce_weighted_values(
        losses[0], sample_weight=group_weight, reduction=options["reduction"],
        dtype=losses.dtype)
    return scale_loss_for_distribution(loss, replicas)


def multiclass_plan(y_true, y_pred, sample_weight, mask, options):
    """``(MultiClassSpec, labels, weight map or None, per-group loss weight or None)``.

    Labels: sparse ids of y_pred's pixel shape (B, ...) (a trailing 1-axis squeezed), or
    dense labels of y_pred's shape. Sample weights and masks are aligned with the pixel
    shape (B, ...) (a trailing 1-axis squeezed) and split as ``split_weights`` says.
    """
    pred_shape = tuple(y_pred.shape)
    classes = _options.num_classes_for(options, pred_shape)
    spec = _multiclass.MultiClassSpec.from_options(options, classes)
    pixel_shape = pred_shape[:-1]
    labels = y_true
    true_shape = tuple(y_true.shape)
    if spec.sparse:
        if len(true_shape) == len(pred_shape) and true_shape[-1] == 1:
            labels = ops.squeeze(y_true, axis=-1)
        expected, what = pixel_shape, "y_pred's shape without the class axis"
    else:
        expected, what = pred_shape, "y_pred's shape (one channel per class)"
    if not _shapes_match(tuple(labels.shape), expected):
        hint = (" For integer class ids pass sparse_y_true=True." if not spec.sparse
                and _shapes_match(true_shape[:len(pixel_shape)], pixel_shape) else "")
        raise ValueError(f"y_true of shape {true_shape} does not match {what}, "
                         f"{expected}.{hint}")
    weights = []
    for weight in (sample_weight, mask):
        if weight is not None and len(weight.shape) == len(pred_shape) and \
                weight.shape[-1] == 1 and len(pixel_shape) > 0:
            weight = ops.squeeze(weight, axis=-1)
        weights.append(weight)
    weight_map, group_weight = split_weights(pixel_shape, ops.shape(y_pred)[:-1], *weights,
                                             spec.per_image)
    return spec, labels, weight_map, group_weight


def _shapes_match(shape, expected):
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected))


def multiclass_loss_from_sums(sums, spec, group_weight, options, replicas=1):
    """Keras's reduction of the per-group losses (``_multiclass.group_losses``) from the
    (G, C, 3) sums, as ``loss_from_sums`` reduces pixel and class weighting's."""
    losses = _multiclass.group_losses(sums, spec, ops)
    if spec.per_image:
        return reduce_weighted_values(
            losses, sample_weight=group_weight, reduction=options["reduction"],
            dtype=losses.dtype, replicas=replicas)
    loss = reduce_weighted_values(losses[0], sample_weight=group_weight,
                                  reduction=options["reduction"], dtype=losses.dtype)
    return scale_loss_for_distribution(loss, replicas)
