"""The loss on the JAX Keras backend: input checks, the fused JAX sums, Keras's reduction.

Every weighting and option. Same formulas and reduction as on TensorFlow; the clip gradient follows DESIGN.md (ties at ε and 1-ε pass), where the seed class on
JAX (``jnp.clip`` autodiff) gives ties half the gradient.
"""

import jax
import jax.numpy as jnp

from wiou_ops import _dispatch, _jax, losses


def as_inputs(y_true, y_pred, per_image=False):
    y_pred = jnp.asarray(y_pred)
    if not jnp.issubdtype(y_pred.dtype, jnp.floating):
        raise TypeError(
            "y_pred must be a floating tensor of probabilities "
            f"(float16, bfloat16, float32 or float64), got dtype {y_pred.dtype}.")
    y_true = jnp.asarray(y_true)
    if not (jnp.issubdtype(y_true.dtype, jnp.number) or y_true.dtype == jnp.bool_):
        raise TypeError(f"y_true must be a float, integer or bool tensor, got dtype "
                        f"{y_true.dtype}.")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true.shape={y_true.shape} "
            f"and y_pred.shape={y_pred.shape}. (A mask of shape (B, H, W) for predictions "
            "of shape (B, H, W, 1) needs y_true[..., None].)")
    if per_image and y_pred.ndim < 2:
        raise ValueError(
            "per_image=True needs a batch axis and at least one more: y_pred must have "
            f"rank >= 2, got y_pred.shape={y_pred.shape}.")
    return y_true, y_pred


def compute(y_true, y_pred, sample_weight, mask, options):
    y_true, y_pred = as_inputs(y_true, y_pred, options["per_image"])
    if options["check_inputs"]:
        _check_values(y_true, y_pred, sample_weight, options)
    _dispatch.select_jax(options["implementation"])
    # cross_replica needs nothing here: Keras's JAX distribution API (DataParallel) jits
    # the step over the global batch as one sharded array, so the sums are already the
    # global batch's (XLA's partitioner adds the all-reduce). tests/test_keras_jax.py
    # checks it on 8 devices. Plain JAX under shard_map/pmap: wiou_ops.jax, axis_name.
    spec, weight_map, group_weight = losses.sums_plan(y_true, sample_weight, mask, options)
    sums = _jax.iou_sums(y_true, y_pred, weight_map, spec, None)
    return losses.loss_from_sums(sums, y_true, y_pred, sample_weight, mask, group_weight,
                                 options)


def _check_values(y_true, y_pred, sample_weight, options):
    """``check_inputs=True`` on concrete arrays (under jit the values are unknown: skipped)."""
    if isinstance(y_pred, jax.core.Tracer) or isinstance(y_true, jax.core.Tracer):
        return
    if not bool(jnp.all((y_true >= 0) & (y_true <= 1))):
        raise ValueError("y_true must be in [0, 1] (check_inputs=True).")
    if options["from_logits"]:
        if not bool(jnp.all(jnp.isfinite(y_pred))):
            raise ValueError("y_pred (logits) must be finite (check_inputs=True).")
    elif not bool(jnp.all((y_pred >= 0) & (y_pred <= 1))):
        raise ValueError("y_pred must be probabilities in [0, 1] (from_logits=False; "
                         "check_inputs=True).")
    if sample_weight is not None and not isinstance(sample_weight, jax.core.Tracer):
        weight = jnp.asarray(sample_weight)
        if not bool(jnp.all(jnp.isfinite(weight) & (weight >= 0))):
            raise ValueError("sample_weight must be finite and >= 0 (check_inputs=True).")
