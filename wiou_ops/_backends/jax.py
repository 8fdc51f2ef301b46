"""The loss on the JAX Keras backend: input checks, the JAX kernel, Keras's reduction.

Every weighting and option, with the formulas and reduction of the TensorFlow backend.
The clip's gradient passes at ties (ε and 1-ε, ``_iou.clip_passes``), where the seed
class on JAX (``jnp.clip`` autodiff) gives ties half the gradient.
"""

import jax

from wiou_ops._common import inputs, reduction
from wiou_ops._kernels import jax as jax_kernel


def available():
    return ["jax"]


def _select(implementation):
    """'auto' and 'xla' mean the JAX kernel (XLA-compiled by jit)."""
    if implementation not in ("auto", "xla"):
        raise ValueError(
            f"implementation={implementation!r} is a TensorFlow implementation; on the JAX "
            "backend use 'auto' (or 'xla')."
        )
    return "jax"


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """``(implementation name, loss)``; ``trace`` is TensorFlow's (jit traces here)."""
    del trace
    y_true, y_pred = inputs.as_inputs(y_true, y_pred, options["per_image"])
    if options["check_inputs"]:
        _check_values(y_true, y_pred, sample_weight, options)
    name = _select(options["implementation"])
    # cross_replica needs nothing here: Keras's JAX distribution API (DataParallel) jits
    # the step over the global batch as one sharded array, so the sums are already the
    # global batch's (XLA's partitioner adds the all-reduce). tests/test_keras_jax.py
    # checks it on 8 devices. Plain JAX under shard_map/pmap: wiou_ops.jax, axis_name.
    spec, weight_map, group_weight = reduction.sums_plan(y_true, sample_weight, mask, options)
    sums = jax_kernel.iou_sums(y_true, y_pred, weight_map, spec, None)
    return name, reduction.loss_from_sums(sums, y_true, y_pred, sample_weight, mask,
                                          group_weight, options, group_sums=jax_kernel.group_sums)


def _check_values(y_true, y_pred, sample_weight, options):
    """``check_inputs=True`` on concrete arrays (under jit the values are unknown: skipped)."""
    if isinstance(y_pred, jax.core.Tracer) or isinstance(y_true, jax.core.Tracer):
        return
    if isinstance(sample_weight, jax.core.Tracer):
        sample_weight = None
    inputs.check_values(y_true, y_pred, sample_weight, options)


def compute_multiclass(y_true, y_pred, sample_weight, mask, options, trace=True):
    """``(implementation name, loss)`` of the multi-class loss; see ``compute``."""
    del trace
    y_true, y_pred = inputs.as_multiclass_inputs(y_true, y_pred, options["sparse_y_true"])
    name = _select(options["implementation"])
    spec, labels, weight_map, group_weight = reduction.multiclass_plan(
        y_true, y_pred, sample_weight, mask, options)
    if options["check_inputs"] and not any(isinstance(a, jax.core.Tracer) for a in (
            labels, y_pred, sample_weight)):
        inputs.check_multiclass_values(labels, y_pred, sample_weight, spec)
    sums = jax_kernel.multiclass_sums(labels, y_pred, weight_map, spec, None)
    return name, reduction.multiclass_loss_from_sums(sums, spec, group_weight, options)
