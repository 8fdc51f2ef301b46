"""WeightedIoULoss and weighted_iou_loss: the drop-in for the seed class.

Seed weighting (the default, ``weighting="seed"``) gives the seed class's value
and gradient under Keras, for every reduction, sample weight and mask::

    p̂   = clip(p, ε, 1-ε)
    I   = Σ y·p̂,   U = Σ (y + p̂ - y·p̂)               (whole batch)
    L   = -log((I + ε) / (U + ε))
    map = L · (w_b·(1 - y) + w_f·y)                     (the seed's per-pixel loss)
    loss = keras_reduce(map, sample_weight, mask, reduction)

Keras's reductions are linear in the map, so ``loss = L · keras_reduce(w)``
with ``w`` the weight map. Without sample weights and masks that factor is
``(w_b·(N - Σy) + w_f·Σy) / N``, computed from the fused pass's ``Σy``:
the per-pixel loss map is never built (only ``reduction="none"`` returns it).
Note what this shows: the seed's class weights rescale the loss by the
batch's mean weight and never change the gradient's direction.
"""

import math
import numbers

import keras
from keras import ops
from keras.src import backend as keras_backend
from keras.src.losses import loss as keras_loss

from wiou_ops import _dispatch

WEIGHTINGS = ("seed", "pixel", "class")
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)

# Options of the public contract that later issues implement, with the issue.
_PLANNED = {
    "weighting": ("seed", "issue #5 (weightings that re-balance classes)"),
    "per_image": (False, "issue #5 (per-image IoU)"),
    "from_logits": (False, "issue #5 (fused sigmoid for logits)"),
    "log": (True, "issue #5 (1 - IoU instead of -log IoU)"),
    "cross_replica": (False, "issue #6 (global-batch IoU across replicas)"),
}


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}.")
    return value


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def validate_options(
    *,
    weight_background=1.0,
    weight_foreground=1.0,
    epsilon=1e-7,
    weighting="seed",
    per_image=False,
    from_logits=False,
    log=True,
    cross_replica=False,
    implementation="auto",
    reduction="sum_over_batch_size",
):
    """Checks every option; returns them as a dict of plain Python values.

    Raises ``TypeError``/``ValueError`` naming the argument, and
    ``NotImplementedError`` naming the issue for options not built yet.
    """
    options = dict(
        weight_background=_check_weight("weight_background", weight_background),
        weight_foreground=_check_weight("weight_foreground", weight_foreground),
        per_image=_check_bool("per_image", per_image),
        from_logits=_check_bool("from_logits", from_logits),
        log=_check_bool("log", log),
        cross_replica=_check_bool("cross_replica", cross_replica),
    )
    if options["weight_background"] == 0 and options["weight_foreground"] == 0:
        raise ValueError("weight_background and weight_foreground cannot both be 0.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {epsilon!r}.")
    if not (0 < float(epsilon) < 0.5):
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}.")
    options["epsilon"] = float(epsilon)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting={weighting!r}; expected one of {WEIGHTINGS}.")
    options["weighting"] = weighting
    if implementation not in _dispatch.IMPLEMENTATION_CHOICES:
        raise ValueError(
            f"Unknown implementation={implementation!r}; "
            f"expected one of {_dispatch.IMPLEMENTATION_CHOICES}."
        )
    options["implementation"] = implementation
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction={reduction!r}; expected one of {REDUCTIONS}.")
    options["reduction"] = reduction
    for name, (supported, issue) in _PLANNED.items():
        if options[name] != supported:
            raise NotImplementedError(
                f"{name}={options[name]!r} is not implemented yet: it lands with {issue}. "
                f"Only {name}={supported!r} works in this version."
            )
    return options


def seed_loss_from_sums(log_iou_loss, sum_y, y_true, y_pred, sample_weight, mask, options):
    """``L · keras_reduce(weight map)``, for any Keras backend (keras.ops).

    Keras's own reduction is applied to the weight map when sample weights,
    a mask or ``reduction="none"`` ask for it (exact seed semantics for every
    broadcast, at the cost of one pass over y_true); otherwise the factor is
    ``(w_b·(N - Σy) + w_f·Σy) / N`` from the fused pass's Σy.
    """
    dtype = log_iou_loss.dtype
    w_b, w_f = options["weight_background"], options["weight_foreground"]
    reduction = options["reduction"]
    if reduction in (None, "none") or sample_weight is not None or mask is not None:
        y = ops.cast(y_true, dtype)
        weight = keras_loss.reduce_weighted_values(
            w_b * (1.0 - y) + w_f * y, sample_weight=sample_weight, mask=mask,
            reduction=reduction, dtype=dtype)
        return log_iou_loss * weight
    count = ops.cast(ops.size(y_pred), dtype)
    total_weight = w_b * (count - sum_y) + w_f * sum_y
    if reduction == "sum":
        return log_iou_loss * total_weight
    mean_weight = ops.divide_no_nan(total_weight, count)
    return keras_loss.scale_loss_for_distribution(log_iou_loss * mean_weight)


def weighted_iou_loss(y_true, y_pred, sample_weight=None, **options):
    """Weighted IoU (soft Jaccard) loss of binary predictions, fused.

    Args:
      y_true: labels in [0, 1]; float, bool, uint8 or int; same shape as y_pred.
      y_pred: probabilities; float32, float16 or bfloat16 (consumed as is,
        accumulated in float32).
      sample_weight: optional; broadcast and applied as Keras does.
      **options: keyword-only options of ``WeightedIoULoss`` (weight_background,
        weight_foreground, epsilon, weighting, per_image, from_logits, log,
        cross_replica, implementation, reduction).

    Returns:
      The reduced loss, a float32 scalar (the per-pixel map for
      ``reduction="none"``). Seed weighting::

        L = -log((Σ y·p̂ + ε) / (Σ (y + p̂ - y·p̂) + ε)),  p̂ = clip(p, ε, 1-ε)
        loss = L · reduce(w_b·(1 - y) + w_f·y)
    """
    return _dispatch.compute(y_true, y_pred, sample_weight, None, validate_options(**options))


@keras.saving.register_keras_serializable(package="wiou_ops")
class WeightedIoULoss(keras.losses.Loss):
    """Drop-in, fused replacement for the seed's ``WeightedIoULoss``.

    Same arguments and, with ``weighting="seed"``, the same value and gradient
    as the seed class, for every Keras reduction, sample weight and mask.
    The loss is computed in one fused pass (three sums) with a hand-written
    one-pass gradient; ``y_pred`` is not up-cast to the loss dtype first.

    Formula (seed weighting)::

        L = -log((Σ y·p̂ + ε) / (Σ (y + p̂ - y·p̂) + ε)),  p̂ = clip(p, ε, 1-ε)
        loss = L · reduce(w_b·(1 - y) + w_f·y)

    The class weights only rescale the loss (see the README).
    """

    def __init__(
        self,
        weight_background=1.0,
        weight_foreground=1.0,
        epsilon=1e-7,
        *,
        weighting="seed",
        per_image=False,
        from_logits=False,
        log=True,
        cross_replica=False,
        implementation="auto",
        reduction="sum_over_batch_size",
        name="weighted_iou_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._options = validate_options(
            weight_background=weight_background,
            weight_foreground=weight_foreground,
            epsilon=epsilon,
            weighting=weighting,
            per_image=per_image,
            from_logits=from_logits,
            log=log,
            cross_replica=cross_replica,
            implementation=implementation,
            reduction=reduction,
        )

    def __getattr__(self, name):
        # weight_background, epsilon, ... read from the validated options.
        options = self.__dict__.get("_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, y_true, y_pred, sample_weight=None):
        mask = keras_backend.get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            loss = _dispatch.compute(y_true, y_pred, sample_weight, mask, self._options)
            return ops.cast(loss, self.dtype)

    def call(self, y_true, y_pred):
        """The seed's per-pixel loss map (what ``reduction="none"`` returns)."""
        options = dict(self._options, reduction="none")
        return _dispatch.compute(y_true, y_pred, None, None, options, trace=False)

    def get_config(self):
        config = super().get_config()
        config.update(self._options)
        return config
