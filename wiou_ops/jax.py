"""The fused weighted IoU loss as plain JAX functions (``pip install wiou-ops[jax]``).

``weighted_iou_loss(y_true, y_pred, *, ..., axis_name=None)`` is jittable,
has a hand-written ``jax.custom_vjp`` and, with ``axis_name``, gives the
global-batch loss and gradients under ``shard_map``/``pmap``. Keras users get
the same kernels from ``wiou_ops.WeightedIoULoss`` on the JAX backend.
"""

from wiou_ops._jax import iou_sums, weighted_iou_loss

__all__ = ["weighted_iou_loss", "iou_sums"]
