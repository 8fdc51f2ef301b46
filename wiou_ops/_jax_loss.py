"""The loss on the JAX Keras backend: input checks, the fused JAX sums, Keras's reduction.

Seed weighting only so far (issue #7 brings every option and the Keras JAX
distribution API). Same formulas and reduction as on TensorFlow; the clip
gradient follows DESIGN.md (ties at ε and 1-ε pass), where the seed class on
JAX (``jnp.clip`` autodiff) gives ties half the gradient.
"""

import jax.numpy as jnp

from wiou_ops import _dispatch, _jax, losses


def as_inputs(y_true, y_pred):
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
    return y_true, y_pred


def compute(y_true, y_pred, sample_weight, mask, options):
    y_true, y_pred = as_inputs(y_true, y_pred)
    _dispatch.select_jax(options["implementation"])
    log_iou_loss, sum_y = _jax.seed_log_iou(y_true, y_pred, options["epsilon"], None)
    return losses.seed_loss_from_sums(log_iou_loss, sum_y, y_true, y_pred, sample_weight, mask,
                                      options)
