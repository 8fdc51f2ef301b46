"""The loss on every other Keras backend (PyTorch; NumPy for evaluation): ``keras.ops``.

The same options, reduction and numbers as the fused backends, so ``WeightedIoULoss``
is a drop-in for the seed class here too. ``cross_replica`` has nothing to reduce on
these backends: Keras's distribution API is JAX's.
"""

import keras

from wiou_ops._common import inputs, reduction
from wiou_ops._kernels import ops as ops_kernel


def available():
    return ["ops"]


def _select(implementation):
    if implementation != "auto":
        raise ValueError(
            f"implementation={implementation!r} is not available on the "
            f"{keras.backend.backend()!r} Keras backend: use 'auto' (keras.ops).")
    return "ops"


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """``(implementation name, loss)``; ``trace`` is TensorFlow's."""
    del trace
    y_true, y_pred = inputs.as_inputs(y_true, y_pred, options["per_image"])
    if options["check_inputs"]:
        inputs.check_values(y_true, y_pred, sample_weight, options)
    name = _select(options["implementation"])
    spec, weight_map, group_weight = reduction.sums_plan(y_true, sample_weight, mask, options)
    sums = ops_kernel.iou_sums(y_true, y_pred, weight_map, spec)
    return name, reduction.loss_from_sums(sums, y_true, y_pred, sample_weight, mask,
                                          group_weight, options)


def compute_multiclass(y_true, y_pred, sample_weight, mask, options, trace=True):
    """``(implementation name, loss)`` of the multi-class loss; see ``compute``."""
    del trace
    y_true, y_pred = inputs.as_multiclass_inputs(y_true, y_pred, options["sparse_y_true"])
    name = _select(options["implementation"])
    spec, labels, weight_map, group_weight = reduction.multiclass_plan(
        y_true, y_pred, sample_weight, mask, options)
    if options["check_inputs"]:
        inputs.check_multiclass_values(labels, y_pred, sample_weight, spec)
    sums = ops_kernel.multiclass_sums(labels, y_pred, weight_map, spec)
    return name, reduction.multiclass_loss_from_sums(sums, spec, group_weight, options)
