"""The loss on the JAX Keras backend: input checks, the fused JAX sums, Keras's reduction.

Every weighting and option. Same formulas and reduction as on TensorFlow; the clip gradient follows DESIGN.md (ties at ε and 1-ε pass), where the seed class on
JAX (``jnp.clip`` autodiff) gives ties half the gradient.
"""

import jax

from wiou_ops import _dispatch, _jax, _ops_loss, losses


def compute(y_true, y_pred, sample_weight, mask, options):
    y_true, y_pred = _ops_loss.as_inputs(y_true, y_pred, options["per_image"])
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
                                 options, row_sums=_jax.row_sums)


def _check_values(y_true, y_pred, sample_weight, options):
    """``check_inputs=True`` on concrete arrays (under jit the values are unknown: skipped)."""
    if isinstance(y_pred, jax.core.Tracer) or isinstance(y_true, jax.core.Tracer):
        return
    if isinstance(sample_weight, jax.core.Tracer):
        sample_weight = None
    _ops_loss.check_values(y_true, y_pred, sample_weight, options)
