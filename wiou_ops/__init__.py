"""wiou_ops: the fast, trustworthy weighted IoU loss for Keras 3 segmentation.

Layers (docs/design.md): ``losses`` (public Keras API) -> ``_router`` -> ``_backends``
-> ``_common`` -> ``_kernels`` -> ``_iou``. ``wiou_ops.jax`` is the plain-JAX API.
"""

from wiou_ops._router import available_implementations, last_implementation
from wiou_ops.losses import WeightedIoULoss, weighted_iou_loss
from wiou_ops.reference import SeedWeightedIoULoss

__all__ = [
    "WeightedIoULoss",
    "weighted_iou_loss",
    "SeedWeightedIoULoss",
    "available_implementations",
    "last_implementation",
]
__version__ = "0.1.0"
