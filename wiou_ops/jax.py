"""The fused weighted IoU loss as plain JAX functions (``pip install wiou-ops[jax]``).

``weighted_iou_loss(y_true, y_pred, *, ..., axis_name=None)`` is jittable, has a
hand-written ``jax.custom_vjp`` (``iou_sums``) and, with ``axis_name``, gives the
global-batch loss and gradients under ``shard_map``/``pmap``. Keras users get the
same kernel from ``wiou_ops.WeightedIoULoss`` on the JAX backend. Needs JAX only
(no Keras, no TensorFlow).
"""

import jax.numpy as jnp
from jax import lax

from wiou_ops import _iou, _multiclass
from wiou_ops._common import options as _options
from wiou_ops._kernels.jax import BACKWARDS, JAX_OPS, iou_sums, multiclass_sums

__all__ = ["weighted_iou_loss", "seed_weighted_iou_loss", "multiclass_iou_loss", "iou_sums",
           "multiclass_sums", "BACKWARDS"]

REDUCTIONS = ("sum_over_batch_size", "mean", "sum")


def weighted_iou_loss(y_true, y_pred, *, weight_background=1.0, weight_foreground=1.0,
                      epsilon=1e-7, weighting="seed", per_image=False, from_logits=False,
                      log=True, sample_weight=None, reduction="sum_over_batch_size",
                      axis_name=None, backward="auto"):
    """The weighted IoU loss in plain JAX (jittable; every weighting of the Keras class).

    Per group g (the batch, or each image with ``per_image``)::

        L_g = -log((I_g + ε)/(U_g + ε))    (log=False: 1 - (I_g + ε)/(U_g + ε))
        seed:  loss = Σ_g L_g · Σ_{i in g} (w_b·(1 - y_i) + w_f·y_i) / N
        pixel, class: loss = mean_g L_g  (the sums of docs/design.md)

    ``sample_weight`` (pixel/class weighting): a weight map that broadcasts to
    y_true's shape, inside the sums. Seed weighting: no sample weight (use the
    Keras class for Keras's sample-weight semantics). ``reduction``:
    "sum_over_batch_size"/"mean" or "sum"; seed weighting divides by the pixel
    count, the others by the number of IoUs (B with ``per_image``, else 1).
    With ``axis_name`` (inside ``shard_map``/``pmap`` over the batch) the
    result and gradients equal the unsharded ones. ``backward``: which backward
    the VJP runs (``iou_sums``); "auto" picks by platform.
    """
    return _loss(y_true, y_pred, weight_background=weight_background,
                 weight_foreground=weight_foreground, epsilon=epsilon, weighting=weighting,
                 per_image=per_image, from_logits=from_logits, log=log,
                 sample_weight=sample_weight, reduction=reduction, axis_name=axis_name,
                 backward=backward)


def seed_weighted_iou_loss(y_true, y_pred, **options):
    """``weighted_iou_loss`` with the seed weighting (the drop-in's numbers)."""
    return weighted_iou_loss(y_true, y_pred, weighting="seed", **options)


def _loss(y_true, y_pred, *, sample_weight=None, reduction="sum_over_batch_size",
          axis_name=None, backward="auto", codes_forward=None, **loss_options):
    """``weighted_iou_loss`` with the kernel's ``codes_forward`` hook (experimental kernels)."""
    options = _options.validate_options(**loss_options)
    _check(y_true, y_pred, options, sample_weight, reduction, backward)
    spec = _iou.SumsSpec.from_options(options)
    weights = None
    if sample_weight is not None:
        weights = jnp.broadcast_to(_expand_trailing(jnp.asarray(sample_weight, jnp.float32),
                                                    y_pred.ndim), y_pred.shape)
    sums = iou_sums(y_true, y_pred, weights, spec, axis_name, backward, codes_forward)
    losses = _iou.group_losses(sums, spec, options["log"], jnp.log)
    per_image = spec.per_image

    def global_sum(x):
        # Per-image losses live on their shard; whole-batch sums are already global.
        return x if axis_name is None or not per_image else lax.psum(x, axis_name)

    # Element and image counts are exact Python ints (shards have equal static shapes),
    # rounded once to float32 where they divide; never int32, never summed in float32.
    shards = 1 if axis_name is None else lax.axis_size(axis_name)
    if spec.weighting == "seed":
        group_size = y_pred.size // max(sums.shape[0], 1)
        if axis_name is not None and not per_image:
            group_size *= shards  # the sums are the global batch's
        total = global_sum(jnp.sum(losses * _iou.seed_group_weight(
            sums[:, 2], float(group_size), spec.weight_background, spec.weight_foreground)))
        if reduction == "sum":
            return total
        return total / float(max(y_pred.size * shards, 1))
    if not per_image:
        return losses[0]
    total = global_sum(jnp.sum(losses))
    if reduction == "sum":
        return total
    return total / float(max(losses.shape[0] * shards, 1))


def _expand_trailing(weight, rank):
    while weight.ndim < rank:
        weight = weight[..., None]
    return weight


def _check(y_true, y_pred, options, sample_weight, reduction, backward):
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got y_true.shape="
                         f"{y_true.shape} and y_pred.shape={y_pred.shape}.")
    if not jnp.issubdtype(y_pred.dtype, jnp.floating):
        raise TypeError(f"y_pred must be floating, got dtype {y_pred.dtype}.")
    if options["per_image"] and y_pred.ndim < 2:
        raise ValueError("per_image=True needs y_pred of rank >= 2 (a batch axis and at "
                         f"least one more), got y_pred.shape={y_pred.shape}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: the plain JAX function supports "
                         f"{REDUCTIONS} (the Keras class has all of Keras's).")
    _options.check_choice("backward", backward, BACKWARDS)
    if sample_weight is not None and options["weighting"] == "seed":
        raise ValueError("sample_weight with weighting='seed' follows Keras's reduction: use "
                         "wiou_ops.WeightedIoULoss on the JAX backend.")


def multiclass_iou_loss(y_true, y_pred, *, class_weights=None, epsilon=1e-7,
                        sparse_y_true=False, ignore_class=None, multi_label=False,
                        from_logits=False, per_image=False, log=True,
                        absent_classes="include", sample_weight=None,
                        reduction="sum_over_batch_size", axis_name=None):
    """The multi-class IoU loss in plain JAX (jittable; the options of
    ``wiou_ops.MultiClassIoULoss``). Per group g (the batch, or each image) and class c::

        I_c = Σ s·y_c·p̂_c,  U_c = Σ s·(y_c + p̂_c - y_c·p̂_c)
        L_c = -log((I_c + ε)/(U_c + ε)),  loss_g = Σ_c w_c·L_c / Σ_c w_c

    y_pred: (B, ..., C); y_true: ids (B, ...) with ``sparse_y_true``, else y_pred's shape.
    ``sample_weight``: a weight map of the pixels (B, ...), inside the sums.
    ``reduction``: "sum_over_batch_size"/"mean" (mean over images with ``per_image``) or
    "sum". With ``axis_name`` (inside ``shard_map``/``pmap`` over the batch) the sums are
    the global batch's: value and gradients equal the unsharded ones.
    """
    options = _options.validate_multiclass_options(
        class_weights=class_weights, epsilon=epsilon, sparse_y_true=sparse_y_true,
        ignore_class=ignore_class, multi_label=multi_label, from_logits=from_logits,
        per_image=per_image, log=log, absent_classes=absent_classes)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: the plain JAX function supports "
                         f"{REDUCTIONS} (the Keras class has all of Keras's).")
    spec = _multiclass.MultiClassSpec.from_options(
        options, _options.num_classes_for(options, y_pred.shape))
    labels = y_true
    if spec.sparse and y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        labels = y_true[..., 0]
    expected = y_pred.shape[:-1] if spec.sparse else y_pred.shape
    if labels.shape != expected:
        raise ValueError(f"y_true of shape {y_true.shape} does not match {expected} "
                         f"(y_pred.shape={y_pred.shape}, sparse_y_true={spec.sparse}).")
    weights = None
    if sample_weight is not None:
        weights = jnp.broadcast_to(_expand_trailing(jnp.asarray(sample_weight, jnp.float32),
                                                    y_pred.ndim - 1), y_pred.shape[:-1])
    sums = multiclass_sums(labels, y_pred, weights, spec, axis_name)
    losses = _multiclass.group_losses(sums, spec, JAX_OPS)
    if not per_image:
        return losses[0]
    total = jnp.sum(losses)
    if axis_name is not None:  # per-image losses live on their shard
        total = lax.psum(total, axis_name)
    if reduction == "sum":
        return total
    shards = 1 if axis_name is None else lax.axis_size(axis_name)
    return total / float(max(losses.shape[0] * shards, 1))
