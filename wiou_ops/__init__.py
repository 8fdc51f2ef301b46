"""wiou_ops: the fast, trustworthy weighted IoU loss for Keras 3 segmentation.

Layers (docs/design.md): ``losses`` (public Keras API) -> ``_router`` -> ``_backends``
-> ``_common`` -> ``_kernels`` -> ``_iou``. ``wiou_ops.jax`` is the plain-JAX API: it
needs JAX only, so where Keras (or its backend) cannot be imported the package still
imports and only the Keras names below are missing.
"""

__version__ = "0.1.0"

# The frameworks the Keras API needs; a missing one of these (and only these) leaves the
# plain-JAX API usable. Any other import error is a bug and is raised.
_FRAMEWORKS = {"keras", "tensorflow", "jax", "torch"}

try:
    # Imported here, not on first use: importing registers the loss classes with Keras,
    # so that keras.models.load_model finds them after `import wiou_ops`.
    from wiou_ops._router import available_implementations, last_implementation
    from wiou_ops.losses import (MultiClassIoULoss, WeightedIoULoss, multiclass_iou_loss,
                                 weighted_iou_loss)
    from wiou_ops.reference import SeedWeightedIoULoss
except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] not in _FRAMEWORKS:
        raise
    _KERAS_UNAVAILABLE = error

    def __getattr__(name):
        if name in __all__:
            raise ImportError(
                f"wiou_ops.{name} needs Keras with a working backend, which failed to "
                f"import: {_KERAS_UNAVAILABLE}. wiou_ops.jax works without them."
            ) from _KERAS_UNAVAILABLE
        raise AttributeError(f"module 'wiou_ops' has no attribute {name!r}")

__all__ = [
    "WeightedIoULoss",
    "weighted_iou_loss",
    "MultiClassIoULoss",
    "multiclass_iou_loss",
    "SeedWeightedIoULoss",
    "available_implementations",
    "last_implementation",
]
