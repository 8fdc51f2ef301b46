"""Keras's loss reduction, exact at any size: sample weights, masks and the five reductions.

The same semantics as ``keras.losses.Loss.__call__`` (its broadcasting of
sample weights and masks included), with two differences that matter past a
few million elements:

* counts are exact integers (a Python int for static shapes, int64 at run
  time), rounded once to the loss dtype where they divide. Keras multiplies
  the shape in int32, which wraps past 2^31 elements;
* every sum over a full-size map goes through the backend's accurate row sums
  (``row_sums``: blocked float32 sums under XLA), not a flat float32 sum, which
  XLA:CPU adds nearly in sequence (relative error ~1e-5 at 1e5 elements).

Backend-neutral: ``keras.ops`` only; the caller supplies ``row_sums``.
"""

from keras import ops

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def plain_row_sums(x):
    """Row sums of a (G, n) array with the backend's own reduction (small arrays)."""
    return ops.sum(x, axis=1)


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


def total(x, row_sums):
    """Σ x over every element, with ``row_sums``."""
    return row_sums(ops.reshape(x, (1, -1)))[0]


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


def _mask_as_weight(sample_weight, mask, reduction, dtype, row_sums):
    """Keras's ``apply_mask``: the mask folded into the sample weight.

    For the mean reductions, valid entries weigh ``total / valid`` so that the
    mean runs over the valid ones.
    """
    if reduction in ("mean", "sum_over_batch_size"):
        valid = total(ops.cast(mask, dtype), row_sums)  # may be 0
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
                           row_sums=plain_row_sums, group_factor=None):
    """Keras's ``reduce_weighted_values``, exact at any size.

    ``loss = Σ values·sample_weight / divisor``, divisor: 1 ("sum"), the element
    count of the weighted values ("sum_over_batch_size", "mean"), or Σ
    sample_weight ("mean_with_sample_weight"); "none" returns the weighted
    values. A mask acts as Keras folds it into the sample weight.

    ``group_factor`` (G,): row g of the values (their leading axis when G > 1)
    is multiplied by ``group_factor[g]`` after the row sums, so that a map
    ``L_g · w`` is reduced as ``Σ_g L_g · Σ_i w_i`` and the sums of ``w`` (data)
    are never differentiated.
    """
    values = ops.cast(values, dtype)
    if mask is not None:
        sample_weight = _mask_as_weight(
            None if sample_weight is None else ops.cast(sample_weight, dtype),
            mask, reduction, dtype, row_sums)
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
    row_totals = row_sums(ops.reshape(values, (groups, -1)))
    loss = ops.sum(row_totals if group_factor is None else row_totals * group_factor)
    if reduction == "sum":
        return loss
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = total(sample_weight, row_sums)
    else:
        divisor = as_float(element_count(ops.shape(values)), dtype)
    return scale_loss_for_distribution(ops.divide_no_nan(loss, divisor))


def scale_loss_for_distribution(value):
    """Divided by the replica count under a tf.distribute strategy, as Keras scales a
    reduced loss (the optimizer then sums the replicas' gradients); else as it is."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value * ops.cast(1.0 / replicas, value.dtype)
    return value
